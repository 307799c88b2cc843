# The bootstrap scripts and Make targets read these with `terraform output -json`.

output "environment" {
  description = "Environment of this state."
  value       = var.environment
}

output "aws_region" {
  description = "Region of the stack: its DocumentDB, secrets and nodes (db-user.sh passes it to aws as --region)."
  value       = var.aws_region
}

output "bastion_public_ip" {
  description = "Public IP of the bastion (ProxyJump host)."
  value       = module.bastion.public_ip
}

output "ssh_user" {
  description = "Login user of the Ubuntu bastion and nodes."
  value       = "ubuntu"
}

output "k3s_server_private_ips" {
  description = "Private IPs of the K3s servers; the first one bootstraps the cluster."
  value       = module.k3s.server_private_ips
}

output "k3s_agent_private_ips" {
  description = "Private IPs of the K3s agents."
  value       = module.k3s.agent_private_ips
}

output "ingress_dns_name" {
  description = "DNS name of the HTTPS ingress load balancer (point the processor hostname here)."
  value       = module.k3s.ingress_dns_name
}

output "archive_bucket_name" {
  description = "S3 archive bucket (CA4_S3_BUCKET)."
  value       = module.archive_bucket.bucket_name
}

output "archive_bucket_region" {
  description = "Region of the archive bucket (CA4_S3_REGION)."
  value       = var.aws_region
}

output "documentdb_endpoint" {
  description = "DocumentDB writer endpoint, null when documentdb_enabled is false."
  value       = module.documentdb.endpoint
}

output "documentdb_secret_arn" {
  description = "Secrets Manager ARN of the DocumentDB master credentials, null when disabled."
  value       = module.documentdb.master_user_secret_arn
}
