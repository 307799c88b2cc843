# Security groups of the stack. Rules are separate aws_vpc_security_group_*_rule resources (one rule
# each, always with a description) so a change to one rule never replaces the group.
#
#   operator --22--> bastion --22,6443,kafka-tunnel--> k3s nodes <--443-- ingress NLB <--443-- internet
#   k3s nodes <--all--> k3s nodes (cluster traffic: API, kubelet, flannel VXLAN, etcd, Kafka pods)
#   k3s nodes --27017--> DocumentDB
#   k3s nodes, bastion --80,443--> internet (via NAT / IGW); k3s nodes --alert_smtp_ports--> internet
# The processor (8000), worker (8001) and Kafka (9092-9094) ports are opened by no rule here: they
# are only reachable pod-to-pod inside the cluster, and the processor only through Traefik.

locals {
  tags = merge(var.tags, { "ca4:module" = "security" })
}

################################################################################
# Bastion
################################################################################

resource "aws_security_group" "bastion" {
  #checkov:skip=CKV2_AWS_5:Attached to the bastion instance (modules/bastion) through this module's output; checkov's graph does not follow ids across modules.
  name        = "${var.name}-bastion"
  description = "CA4 bastion: SSH from operator CIDRs only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-bastion" })
}

resource "aws_vpc_security_group_ingress_rule" "bastion_ssh" {
  for_each = toset(var.operator_cidrs)

  security_group_id = aws_security_group.bastion.id
  description       = "SSH from operator ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "bastion_to_nodes" {
  security_group_id            = aws_security_group.bastion.id
  description                  = "SSH, Kubernetes API and Kafka tunnel ports to the K3s nodes"
  ip_protocol                  = "tcp"
  from_port                    = 22
  to_port                      = 32767
  referenced_security_group_id = aws_security_group.k3s_nodes.id
}

resource "aws_vpc_security_group_egress_rule" "bastion_https" {
  security_group_id = aws_security_group.bastion.id
  description       = "HTTPS to AWS APIs (SSM) and HTTPS package sources"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "bastion_http" {
  security_group_id = aws_security_group.bastion.id
  description       = "HTTP for Ubuntu's apt mirrors; packages are signed"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = "0.0.0.0/0"
}

################################################################################
# Ingress load balancer
################################################################################

resource "aws_security_group" "ingress" {
  #checkov:skip=CKV2_AWS_5:Attached to the ingress NLB (modules/k3s) through this module's output; checkov's graph does not follow ids across modules.
  name        = "${var.name}-ingress"
  description = "CA4 public ingress NLB: HTTPS in, Traefik on the K3s nodes out"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-ingress" })
}

resource "aws_vpc_security_group_ingress_rule" "ingress_https" {
  for_each = toset(var.ingress_cidrs)

  security_group_id = aws_security_group.ingress.id
  description       = "HTTPS to the processor API from ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "ingress_to_traefik" {
  security_group_id            = aws_security_group.ingress.id
  description                  = "HTTPS to Traefik on the K3s nodes"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.k3s_nodes.id
}

################################################################################
# K3s nodes
################################################################################

resource "aws_security_group" "k3s_nodes" {
  #checkov:skip=CKV2_AWS_5:Attached to every K3s node (modules/k3s) through this module's output; checkov's graph does not follow ids across modules.
  name        = "${var.name}-k3s-nodes"
  description = "CA4 K3s servers and agents"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-k3s-nodes" })
}

resource "aws_vpc_security_group_ingress_rule" "nodes_from_nodes" {
  security_group_id            = aws_security_group.k3s_nodes.id
  description                  = "Cluster traffic between K3s nodes (API, kubelet, flannel VXLAN, etcd, pod traffic incl. Kafka)"
  ip_protocol                  = "-1"
  referenced_security_group_id = aws_security_group.k3s_nodes.id
}

resource "aws_vpc_security_group_ingress_rule" "nodes_ssh_from_bastion" {
  #checkov:skip=CKV_AWS_24:False positive: the source is the bastion security group (referenced_security_group_id), not a CIDR.
  security_group_id            = aws_security_group.k3s_nodes.id
  description                  = "SSH from the bastion (ProxyJump)"
  ip_protocol                  = "tcp"
  from_port                    = 22
  to_port                      = 22
  referenced_security_group_id = aws_security_group.bastion.id
}

resource "aws_vpc_security_group_ingress_rule" "nodes_api_from_bastion" {
  security_group_id            = aws_security_group.k3s_nodes.id
  description                  = "Kubernetes API through the bastion tunnel"
  ip_protocol                  = "tcp"
  from_port                    = 6443
  to_port                      = 6443
  referenced_security_group_id = aws_security_group.bastion.id
}

resource "aws_vpc_security_group_ingress_rule" "nodes_kafka_tunnel_from_bastion" {
  security_group_id            = aws_security_group.k3s_nodes.id
  description                  = "Kafka developer-tunnel NodePorts through the bastion"
  ip_protocol                  = "tcp"
  from_port                    = var.kafka_tunnel_node_ports.from
  to_port                      = var.kafka_tunnel_node_ports.to
  referenced_security_group_id = aws_security_group.bastion.id
}

resource "aws_vpc_security_group_ingress_rule" "nodes_https_from_ingress" {
  security_group_id            = aws_security_group.k3s_nodes.id
  description                  = "HTTPS to Traefik from the ingress NLB only"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.ingress.id
}

resource "aws_vpc_security_group_egress_rule" "nodes_to_vpc" {
  security_group_id = aws_security_group.k3s_nodes.id
  description       = "Any traffic inside the VPC (cluster, DocumentDB, VPC resolver)"
  ip_protocol       = "-1"
  cidr_ipv4         = var.vpc_cidr
}

resource "aws_vpc_security_group_egress_rule" "nodes_https" {
  security_group_id = aws_security_group.k3s_nodes.id
  description       = "HTTPS to image registries, the K3s installer and AWS APIs (via NAT)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "nodes_http" {
  security_group_id = aws_security_group.k3s_nodes.id
  description       = "HTTP for Ubuntu's apt mirrors; packages are signed (via NAT)"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "nodes_smtp" {
  for_each = toset([for port in var.alert_smtp_ports : tostring(port)])

  security_group_id = aws_security_group.k3s_nodes.id
  description       = "SMTP ${each.value} to Alertmanager's email relay (CA4_ALERT_SMTP_SMARTHOST, via NAT)"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_ipv4         = "0.0.0.0/0"
}

################################################################################
# DocumentDB
################################################################################

resource "aws_security_group" "documentdb" {
  #checkov:skip=CKV2_AWS_5:Attached to the DocumentDB cluster (modules/documentdb) through this module's output; checkov's graph does not follow ids across modules.
  name        = "${var.name}-documentdb"
  description = "CA4 DocumentDB: MongoDB wire protocol from the K3s nodes only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-documentdb" })
}

resource "aws_vpc_security_group_ingress_rule" "documentdb_from_nodes" {
  security_group_id            = aws_security_group.documentdb.id
  description                  = "MongoDB wire protocol (TLS) from the K3s nodes"
  ip_protocol                  = "tcp"
  from_port                    = 27017
  to_port                      = 27017
  referenced_security_group_id = aws_security_group.k3s_nodes.id
}
