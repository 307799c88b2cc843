output "server_private_ips" {
  description = "Private IPs of the K3s servers, first one is the bootstrap server."
  value       = [for k, n in aws_instance.node : n.private_ip if startswith(k, "server-")]
}

output "agent_private_ips" {
  description = "Private IPs of the K3s agents."
  value       = [for k, n in aws_instance.node : n.private_ip if startswith(k, "agent-")]
}

output "ingress_dns_name" {
  description = "DNS name of the public ingress load balancer (point the API hostname here)."
  value       = try(aws_lb.ingress.dns_name, null)
}

output "node_role_arn" {
  description = "ARN of the K3s node IAM role (archive bucket access only)."
  value       = try(aws_iam_role.nodes.arn, null)
}
