output "bastion_security_group_id" {
  description = "ID of the bastion security group."
  value       = try(aws_security_group.bastion.id, null)
}

output "ingress_security_group_id" {
  description = "ID of the public ingress load balancer security group."
  value       = try(aws_security_group.ingress.id, null)
}

output "k3s_nodes_security_group_id" {
  description = "ID of the K3s node security group."
  value       = try(aws_security_group.k3s_nodes.id, null)
}

output "documentdb_security_group_id" {
  description = "ID of the DocumentDB security group."
  value       = try(aws_security_group.documentdb.id, null)
}
