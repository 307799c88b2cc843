################################################################################
# Environment
################################################################################

variable "environment" {
  description = "Deployment environment; part of every name."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.environment)
    error_message = "environment must be \"dev\" or \"prod\"."
  }
}

variable "aws_region" {
  description = "AWS region of the stack (e.g. eu-west-1)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.aws_region))
    error_message = "aws_region must be an AWS region name such as eu-west-1."
  }
}

variable "tags" {
  description = "(Optional) Extra tags on every resource (default_tags)."
  type        = map(string)
  default     = {}
}

################################################################################
# Network and access
################################################################################

variable "vpc_cidr" {
  description = "(Optional) IPv4 CIDR of the VPC."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "vpc_cidr must be a valid IPv4 CIDR."
  }
}

variable "availability_zones" {
  description = "Two availability zones of aws_region."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) == 2
    error_message = "availability_zones must list exactly two zones."
  }
}

variable "single_nat_gateway" {
  description = "(Optional) One shared NAT gateway (dev) instead of one per zone (prod)."
  type        = bool
  default     = true
}

variable "operator_cidrs" {
  description = "CIDRs allowed to SSH to the bastion; `make ca4-apply` sets it from CA4_OPERATOR_CIDR. Never 0.0.0.0/0."
  type        = list(string)

  validation {
    condition     = length(var.operator_cidrs) > 0 && alltrue([for c in var.operator_cidrs : can(cidrhost(c, 0)) && !startswith(c, "0.0.0.0/")])
    error_message = "operator_cidrs must be a non-empty list of valid IPv4 CIDRs, none of them 0.0.0.0/0."
  }
}

variable "ingress_cidrs" {
  description = "(Optional) CIDRs allowed to reach the HTTPS ingress (processor API)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "kafka_tunnel_node_ports" {
  description = "(Optional) NodePort range (from, to) the bastion may reach for the Kafka tunnel: broker N listens on kafka.tunnel.nodePortBase + N (ca4-platform chart), so the range needs one port per broker of kafka.replicas."
  type        = object({ from = number, to = number })
  default     = { from = 30094, to = 30096 }

  validation {
    condition     = var.kafka_tunnel_node_ports.from >= 30000 && var.kafka_tunnel_node_ports.to <= 32767 && var.kafka_tunnel_node_ports.from <= var.kafka_tunnel_node_ports.to
    error_message = "kafka_tunnel_node_ports must lie inside the Kubernetes NodePort range 30000-32767 with from <= to."
  }
}

variable "alert_smtp_ports" {
  description = "(Optional) TCP ports the K3s nodes may reach on any address for Alertmanager's email: the port of CA4_ALERT_SMTP_SMARTHOST must be one of them, unless the relay is inside the VPC (e.g. an SES VPC endpoint). Empty opens none."
  type        = list(number)
  default     = [587]
  nullable    = false

  validation {
    condition     = alltrue([for port in var.alert_smtp_ports : port >= 1 && port <= 65535 && floor(port) == port && !contains([80, 443], port)])
    error_message = "alert_smtp_ports must list TCP ports between 1 and 65535, other than 80 and 443 (the nodes reach those already: a second rule for them is refused by AWS)."
  }
}

variable "ssh_public_key" {
  description = "OpenSSH public key installed on the bastion and the nodes; `make ca4-apply` reads it from CA4_SSH_PUBLIC_KEY_FILE."
  type        = string

  validation {
    condition     = can(regex("^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/=]+", var.ssh_public_key))
    error_message = "ssh_public_key must be an OpenSSH public key (ssh-ed25519, ecdsa-sha2-* or ssh-rsa)."
  }
}

variable "bastion_instance_type" {
  description = "(Optional) EC2 instance type of the bastion."
  type        = string
  default     = "t3.micro"
}

################################################################################
# K3s
################################################################################

variable "k3s_server_count" {
  description = "(Optional) Number of K3s servers (1 or 3)."
  type        = number
  default     = 1

  validation {
    condition     = contains([1, 3], var.k3s_server_count)
    error_message = "k3s_server_count must be 1 or 3."
  }
}

variable "k3s_agent_count" {
  description = "(Optional) Number of K3s agents."
  type        = number
  default     = 2

  validation {
    condition     = var.k3s_agent_count >= 0 && var.k3s_agent_count <= 20
    error_message = "k3s_agent_count must be between 0 and 20."
  }
}

variable "k3s_server_instance_type" {
  description = "(Optional) EC2 instance type of the K3s servers."
  type        = string
  default     = "t3.large"
}

variable "k3s_agent_instance_type" {
  description = "(Optional) EC2 instance type of the K3s agents."
  type        = string
  default     = "t3.large"
}

variable "k3s_data_volume_size_gb" {
  description = "(Optional) GiB of each node's data volume (local-path PVCs: a Kafka broker's kafka.persistence.size, Prometheus, Loki)."
  type        = number
  default     = 100
}

################################################################################
# Archive bucket
################################################################################

variable "archive_bucket_name" {
  description = "(Optional) Name of the S3 archive bucket; empty derives ca4-<environment>-archive-<account id>."
  type        = string
  default     = ""

  validation {
    condition     = var.archive_bucket_name == "" || can(regex("^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", var.archive_bucket_name))
    error_message = "archive_bucket_name must be empty or 3-63 lowercase letters, digits and hyphens."
  }
}

variable "archive_force_destroy" {
  description = "(Optional) Allow destroying a non-empty archive bucket. Only `make ca4-destroy DESTROY_ARCHIVE=yes` sets it."
  type        = bool
  default     = false
}

variable "archive_expiration_days" {
  description = "(Optional) Days after which archived events expire; 0 keeps them forever."
  type        = number
  default     = 0
}

variable "deletion_protection" {
  description = "(Optional) Deletion protection of the NLB and DocumentDB; null: on in prod, off in dev. Set false and apply before tearing prod down."
  type        = bool
  default     = null
}

################################################################################
# DocumentDB
################################################################################

variable "documentdb_enabled" {
  description = "(Optional) Create the DocumentDB cluster (prod); dev may run FerretDB in the cluster instead."
  type        = bool
  default     = false
}

variable "documentdb_instance_count" {
  description = "(Optional) Number of DocumentDB instances."
  type        = number
  default     = 1
}

variable "documentdb_instance_class" {
  description = "(Optional) DocumentDB instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "documentdb_backup_retention_days" {
  description = "(Optional) Days of DocumentDB's automated backups: how far back a point-in-time restore can go (docs/provisioning.md, \"The database lost or restored\")."
  type        = number
  default     = 7

  validation {
    condition     = var.documentdb_backup_retention_days >= 7 && var.documentdb_backup_retention_days <= 35
    error_message = "documentdb_backup_retention_days must be between 7 and 35."
  }
}

variable "documentdb_profiler_threshold_ms" {
  description = "(Optional) DocumentDB's profiler logs operations slower than this many milliseconds (exported to CloudWatch)."
  type        = number
  default     = 500

  validation {
    condition     = var.documentdb_profiler_threshold_ms >= 50 && var.documentdb_profiler_threshold_ms <= 2147483646 && floor(var.documentdb_profiler_threshold_ms) == var.documentdb_profiler_threshold_ms
    error_message = "documentdb_profiler_threshold_ms must be a whole number between 50 and 2147483646 (DocumentDB's range)."
  }
}
