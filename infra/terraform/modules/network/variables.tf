################################################################################
# Naming and tagging
################################################################################

variable "name" {
  description = "Name prefix for every resource of this module (e.g. ca4-dev)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "(Optional) Tags merged into every resource."
  type        = map(string)
  default     = {}
}

################################################################################
# VPC and subnets
################################################################################

variable "vpc_cidr" {
  description = "IPv4 CIDR block of the VPC (a /16 to /24 private range)."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 24
    error_message = "vpc_cidr must be a valid IPv4 CIDR with a prefix length between /16 and /24."
  }
}

variable "availability_zones" {
  description = "Exactly two availability zones for the public and private subnets (e.g. [\"eu-west-1a\", \"eu-west-1b\"])."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) == 2 && length(distinct(var.availability_zones)) == 2
    error_message = "availability_zones must list exactly two distinct zones."
  }
}

variable "single_nat_gateway" {
  description = "(Optional) One NAT gateway shared by both private subnets (cheaper, dev) instead of one per zone (prod)."
  type        = bool
  default     = true
}

################################################################################
# Flow logs
################################################################################

variable "flow_log_retention_days" {
  description = "(Optional) Days to keep VPC flow logs in CloudWatch."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be one of the retention periods CloudWatch Logs accepts."
  }
}

variable "kms_key_arn" {
  description = "ARN of the customer-managed KMS key that encrypts the flow-log group."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}
