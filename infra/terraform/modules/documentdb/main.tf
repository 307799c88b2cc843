# Optional DocumentDB cluster: TLS enforced, private subnets only, encrypted, master password kept
# by Secrets Manager (never in Terraform state).

locals {
  tags = merge(var.tags, { "ca4:module" = "documentdb" })
}

resource "aws_docdb_subnet_group" "this" {
  count      = var.create ? 1 : 0
  name       = "${var.name}-docdb"
  subnet_ids = var.private_subnet_ids
  tags       = local.tags
}

resource "aws_docdb_cluster_parameter_group" "this" {
  count  = var.create ? 1 : 0
  name   = "${var.name}-docdb"
  family = "docdb${join(".", slice(split(".", var.engine_version), 0, 2))}"

  parameter {
    name  = "tls"
    value = "enabled"
  }

  parameter {
    name  = "audit_logs"
    value = "enabled"
  }

  # The cluster exports profiler logs (enabled_cloudwatch_logs_exports below), which stay empty
  # unless the profiler runs: it logs operations slower than the threshold.
  parameter {
    name  = "profiler"
    value = "enabled"
  }

  parameter {
    name  = "profiler_threshold_ms"
    value = tostring(var.profiler_threshold_ms)
  }

  tags = local.tags
}

resource "aws_docdb_cluster" "this" {
  count = var.create ? 1 : 0

  cluster_identifier              = "${var.name}-docdb"
  engine                          = "docdb"
  engine_version                  = var.engine_version
  master_username                 = "ca4admin"
  manage_master_user_password     = true
  db_subnet_group_name            = aws_docdb_subnet_group.this[0].name
  db_cluster_parameter_group_name = aws_docdb_cluster_parameter_group.this[0].name
  vpc_security_group_ids          = [var.security_group_id]
  storage_encrypted               = true
  kms_key_id                      = var.kms_key_arn
  backup_retention_period         = var.backup_retention_days
  preferred_backup_window         = "02:00-03:00"
  enabled_cloudwatch_logs_exports = ["audit", "profiler"]
  deletion_protection             = var.deletion_protection
  skip_final_snapshot             = false
  # Stamped at creation (then ignored): a fixed name made the teardown of a second cluster of the
  # same name fail on the snapshot the first one left.
  final_snapshot_identifier = "${var.name}-docdb-final-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  tags                      = local.tags

  lifecycle {
    ignore_changes = [final_snapshot_identifier]
  }
}

resource "aws_docdb_cluster_instance" "this" {
  count = var.create ? var.instance_count : 0

  identifier                 = "${var.name}-docdb-${count.index}"
  cluster_identifier         = aws_docdb_cluster.this[0].id
  instance_class             = var.instance_class
  auto_minor_version_upgrade = true
  tags                       = local.tags
}
