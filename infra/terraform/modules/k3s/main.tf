locals {
  tags   = merge(var.tags, { "ca4:module" = "k3s" })
  ami_id = var.ami_id != "" ? var.ami_id : data.aws_ami.ubuntu[0].id
  nodes = merge(
    { for i in range(var.server_count) : "server-${i}" => { role = "server", type = var.server_instance_type, index = i } },
    { for i in range(var.agent_count) : "agent-${i}" => { role = "agent", type = var.agent_instance_type, index = i } },
  )
}

data "aws_ami" "ubuntu" {
  count       = var.ami_id == "" ? 1 : 0
  most_recent = true
  owners      = ["099720109477"] # Canonical

  filter {
    name   = "name"
    values = ["ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"]
  }
}

################################################################################
# Node IAM role: archive bucket only
################################################################################

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "archive" {
  statement {
    sid       = "ListArchiveBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [var.archive_bucket_arn]
  }

  statement {
    sid       = "ReadWriteArchiveObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${var.archive_bucket_arn}/*"]
  }

  statement {
    sid       = "UseArchiveKey"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role" "nodes" {
  name               = "${var.name}-k3s-nodes"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "archive" {
  name   = "archive-bucket"
  role   = aws_iam_role.nodes.id
  policy = data.aws_iam_policy_document.archive.json
}

resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.nodes.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "nodes" {
  name = "${var.name}-k3s-nodes"
  role = aws_iam_role.nodes.name
  tags = local.tags
}

################################################################################
# Nodes
################################################################################

locals {
  data_device_name = "/dev/sdf"
  # Formats the data disk once (label ca4-data) and mounts it where K3s local-path keeps volumes.
  # On Nitro instances /dev/sdf appears as an NVMe disk: it is the one disk that is not the root's.
  data_volume_user_data = <<-EOT
    #!/bin/bash
    set -euo pipefail
    mount_point=/var/lib/rancher/k3s/storage
    mountpoint -q "$mount_point" && exit 0
    root_disk="$(lsblk -no PKNAME "$(findmnt -no SOURCE /)")"
    data_disk="$(lsblk -dpno NAME,TYPE | awk -v root="/dev/$root_disk" '$2 == "disk" && $1 != root {print $1; exit}')"
    blkid "$data_disk" >/dev/null || mkfs.ext4 -L ca4-data "$data_disk"
    mkdir -p "$mount_point"
    grep -q 'LABEL=ca4-data' /etc/fstab || echo "LABEL=ca4-data $mount_point ext4 defaults,nofail 0 2" >> /etc/fstab
    mount "$mount_point"
  EOT
}

resource "aws_instance" "node" {
  for_each = local.nodes

  ami                         = local.ami_id
  instance_type               = each.value.type
  subnet_id                   = var.private_subnet_ids[each.value.index % length(var.private_subnet_ids)]
  vpc_security_group_ids      = [var.nodes_security_group_id]
  key_name                    = var.key_name
  iam_instance_profile        = aws_iam_instance_profile.nodes.name
  associate_public_ip_address = false
  monitoring                  = true
  ebs_optimized               = true

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required" # IMDSv2 only
    # Two hops: the worker pod reaches the node role's credentials through the container network.
    http_put_response_hop_limit = 2
  }

  root_block_device {
    encrypted   = true
    kms_key_id  = var.kms_key_arn
    volume_type = "gp3"
    volume_size = var.root_volume_size_gb
  }

  # The data disk: K3s local-path PVCs (each Kafka broker's log, Loki, Prometheus) live on it, so
  # a full Kafka volume never fills the root disk. Mounted by the user data before K3s is installed.
  ebs_block_device {
    device_name           = local.data_device_name
    encrypted             = true
    kms_key_id            = var.kms_key_arn
    volume_type           = "gp3"
    volume_size           = var.data_volume_size_gb
    delete_on_termination = true
  }

  user_data = local.data_volume_user_data

  tags        = merge(local.tags, { Name = "${var.name}-k3s-${each.key}", "ca4:k3s-role" = each.value.role })
  volume_tags = local.tags

  lifecycle {
    ignore_changes = [ami] # K3s nodes are upgraded in place, never replaced by a newer image
  }
}

################################################################################
# Ingress: internet-facing NLB -> Traefik (K3s servicelb binds 443 on every node)
################################################################################

resource "aws_lb" "ingress" {
  #checkov:skip=CKV_AWS_150:Deletion protection follows enable_deletion_protection, true in prod; dev must stay destroyable by make ca4-destroy.
  #checkov:skip=CKV_AWS_91:TCP passthrough NLB; request logs are Traefik's access logs, shipped to Loki.
  name                             = substr("${var.name}-ingress", 0, 32)
  load_balancer_type               = "network"
  internal                         = false
  subnets                          = var.public_subnet_ids
  security_groups                  = [var.ingress_security_group_id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.enable_deletion_protection
  tags                             = local.tags
}

resource "aws_lb_target_group" "traefik_https" {
  name        = substr("${var.name}-traefik-https", 0, 32)
  port        = 443
  protocol    = "TCP"
  vpc_id      = var.vpc_id
  target_type = "instance"

  health_check {
    protocol = "TCP"
    port     = "443"
  }

  tags = local.tags
}

resource "aws_lb_listener" "https" {
  #checkov:skip=CKV_AWS_2:TLS is terminated by Traefik inside the cluster (TCP passthrough), not at the NLB.
  #checkov:skip=CKV_AWS_103:TLS policy is Traefik's; the NLB listener is plain TCP passthrough.
  load_balancer_arn = aws_lb.ingress.arn
  port              = 443
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.traefik_https.arn
  }

  tags = local.tags
}

resource "aws_lb_target_group_attachment" "traefik_https" {
  for_each = aws_instance.node

  target_group_arn = aws_lb_target_group.traefik_https.arn
  target_id        = each.value.id
  port             = 443
}
