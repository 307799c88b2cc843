output "vpc_id" {
  description = "ID of the VPC."
  value       = try(aws_vpc.this.id, null)
}

output "vpc_cidr" {
  description = "IPv4 CIDR block of the VPC."
  value       = try(aws_vpc.this.cidr_block, null)
}

output "public_subnet_ids" {
  description = "IDs of the two public subnets (bastion, ingress load balancer, NAT gateways)."
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "IDs of the two private subnets (K3s nodes, DocumentDB)."
  value       = aws_subnet.private[*].id
}

output "nat_public_ips" {
  description = "Public IPs the private subnets leave the VPC through."
  value       = aws_eip.nat[*].public_ip
}
