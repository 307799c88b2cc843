variable "create" {
  description = "(Optional) Create the DocumentDB cluster; false runs the store elsewhere (e.g. FerretDB in dev)."
  type        = bool
  default     = false
}

variable "name" {
  description = "Name prefix for every resource of this module (e.g. ca4-dev)."
  type        = string
}

variable "tags" {
  description = "(Optional) Tags merged into every resource."
  type        = map(string)
  default     = {}
}

variable "private_subnet_ids" {
  description = "IDs of the private subnets of the cluster (two zones)."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "private_subnet_ids must name at least two subnets in different zones."
  }
}

variable "security_group_id" {
  description = "ID of the DocumentDB security group (27017 from the K3s nodes only)."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of the customer-managed KMS key for storage encryption and the master secret."
  type        = string
}

variable "instance_class" {
  description = "(Optional) DocumentDB instance class."
  type        = string
  default     = "db.t4g.medium"

  validation {
    condition     = startswith(var.instance_class, "db.")
    error_message = "instance_class must be a DocumentDB instance class such as db.t4g.medium."
  }
}

variable "instance_count" {
  description = "(Optional) Number of instances (1 primary plus replicas)."
  type        = number
  default     = 1

  validation {
    condition     = var.instance_count >= 1 && var.instance_count <= 16
    error_message = "instance_count must be between 1 and 16."
  }
}

variable "engine_version" {
  description = "(Optional) DocumentDB engine version."
  type        = string
  default     = "5.0.0"
}

variable "backup_retention_days" {
  description = "(Optional) Days of automated backups."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_retention_days >= 7 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 7 and 35."
  }
}

variable "deletion_protection" {
  description = "(Optional) Refuse to delete the cluster (set true in prod)."
  type        = bool
  default     = true
}

variable "profiler_threshold_ms" {
  description = "(Optional) Operations slower than this many milliseconds are logged by the profiler (exported to CloudWatch)."
  type        = number
  default     = 500

  validation {
    condition     = var.profiler_threshold_ms >= 50 && var.profiler_threshold_ms <= 2147483646 && floor(var.profiler_threshold_ms) == var.profiler_threshold_ms
    error_message = "profiler_threshold_ms must be a whole number between 50 and 2147483646 (DocumentDB's range)."
  }
}
