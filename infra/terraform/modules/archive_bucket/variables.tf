variable "bucket_name" {
  description = "Globally unique name of the S3 archive bucket."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", var.bucket_name)) && !can(regex("--", var.bucket_name))
    error_message = "bucket_name must be 3-63 lowercase letters, digits or single hyphens (no dots: they break virtual-hosted TLS), starting and ending with a letter or digit."
  }
}

variable "tags" {
  description = "(Optional) Tags merged into every resource."
  type        = map(string)
  default     = {}
}

variable "kms_key_arn" {
  description = "ARN of the customer-managed KMS key for SSE-KMS."
  type        = string
}

variable "force_destroy" {
  description = "(Optional) Let `terraform destroy` delete a non-empty bucket. Only `make ca4-destroy DESTROY_ARCHIVE=yes` sets it."
  type        = bool
  default     = false
}

variable "transition_to_ia_days" {
  description = "(Optional) Days after which archived objects move to STANDARD_IA."
  type        = number
  default     = 30

  validation {
    condition     = var.transition_to_ia_days >= 30
    error_message = "transition_to_ia_days must be at least 30 (the S3 minimum for STANDARD_IA)."
  }
}

variable "transition_to_glacier_days" {
  description = "(Optional) Days after which archived objects move to GLACIER_IR."
  type        = number
  default     = 90
}

variable "expiration_days" {
  description = "(Optional) Days after which archived objects expire; 0 keeps them forever (the archive is the replay source)."
  type        = number
  default     = 0

  validation {
    condition     = var.expiration_days == 0 || var.expiration_days >= 90
    error_message = "expiration_days must be 0 (keep forever) or at least 90."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "(Optional) Days to keep overwritten or deleted object versions."
  type        = number
  default     = 90

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "noncurrent_version_expiration_days must be at least 1."
  }
}
