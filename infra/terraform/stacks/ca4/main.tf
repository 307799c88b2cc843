locals {
  name    = "ca4-${var.environment}"
  is_prod = var.environment == "prod"
  # On in prod unless the operator turns it off to tear down (docs/provisioning.md).
  deletion_protection = coalesce(var.deletion_protection, local.is_prod)
  archive_bucket      = var.archive_bucket_name != "" ? var.archive_bucket_name : "ca4-${var.environment}-archive-${data.aws_caller_identity.current.account_id}"
}

data "aws_caller_identity" "current" {}

resource "aws_key_pair" "operator" {
  key_name   = "${local.name}-operator"
  public_key = var.ssh_public_key
}

module "network" {
  source = "../../modules/network"

  name               = local.name
  vpc_cidr           = var.vpc_cidr
  availability_zones = var.availability_zones
  single_nat_gateway = var.single_nat_gateway
  kms_key_arn        = aws_kms_key.this.arn
}

module "security" {
  source = "../../modules/security"

  name                    = local.name
  vpc_id                  = module.network.vpc_id
  vpc_cidr                = module.network.vpc_cidr
  operator_cidrs          = var.operator_cidrs
  ingress_cidrs           = var.ingress_cidrs
  kafka_tunnel_node_ports = var.kafka_tunnel_node_ports
  alert_smtp_ports        = var.alert_smtp_ports
}

module "bastion" {
  source = "../../modules/bastion"

  name              = local.name
  subnet_id         = module.network.public_subnet_ids[0]
  security_group_id = module.security.bastion_security_group_id
  instance_type     = var.bastion_instance_type
  key_name          = aws_key_pair.operator.key_name
  kms_key_arn       = aws_kms_key.this.arn
}

module "archive_bucket" {
  source = "../../modules/archive_bucket"

  bucket_name     = local.archive_bucket
  kms_key_arn     = aws_kms_key.this.arn
  force_destroy   = var.archive_force_destroy
  expiration_days = var.archive_expiration_days
}

module "k3s" {
  source = "../../modules/k3s"

  name                       = local.name
  vpc_id                     = module.network.vpc_id
  private_subnet_ids         = module.network.private_subnet_ids
  public_subnet_ids          = module.network.public_subnet_ids
  nodes_security_group_id    = module.security.k3s_nodes_security_group_id
  ingress_security_group_id  = module.security.ingress_security_group_id
  server_count               = var.k3s_server_count
  agent_count                = var.k3s_agent_count
  server_instance_type       = var.k3s_server_instance_type
  agent_instance_type        = var.k3s_agent_instance_type
  data_volume_size_gb        = var.k3s_data_volume_size_gb
  key_name                   = aws_key_pair.operator.key_name
  kms_key_arn                = aws_kms_key.this.arn
  archive_bucket_arn         = module.archive_bucket.bucket_arn
  enable_deletion_protection = local.deletion_protection
}

module "documentdb" {
  source = "../../modules/documentdb"

  create                = var.documentdb_enabled
  name                  = local.name
  private_subnet_ids    = module.network.private_subnet_ids
  security_group_id     = module.security.documentdb_security_group_id
  kms_key_arn           = aws_kms_key.this.arn
  instance_count        = var.documentdb_instance_count
  instance_class        = var.documentdb_instance_class
  backup_retention_days = var.documentdb_backup_retention_days
  profiler_threshold_ms = var.documentdb_profiler_threshold_ms
  deletion_protection   = local.deletion_protection
}
