output "public_ip" {
  description = "Public (Elastic) IP of the bastion: the ProxyJump host."
  value       = try(aws_eip.this.public_ip, null)
}

output "private_ip" {
  description = "Private IP of the bastion inside the VPC."
  value       = try(aws_instance.this.private_ip, null)
}

output "instance_id" {
  description = "EC2 instance id of the bastion."
  value       = try(aws_instance.this.id, null)
}
