variable "name" {
  description = "Name prefix for every resource of this module (e.g. ca4-dev)."
  type        = string
}

variable "tags" {
  description = "(Optional) Tags merged into every resource."
  type        = map(string)
  default     = {}
}

variable "subnet_id" {
  description = "ID of the public subnet the bastion runs in."
  type        = string
}

variable "security_group_id" {
  description = "ID of the bastion security group (SSH from operator CIDRs only)."
  type        = string
}

variable "instance_type" {
  description = "(Optional) EC2 instance type of the bastion."
  type        = string
  default     = "t3.micro"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must look like an EC2 instance type, e.g. t3.micro."
  }
}

variable "ami_id" {
  description = "(Optional) AMI of the bastion; empty picks the latest Ubuntu 24.04 LTS from Canonical."
  type        = string
  default     = ""

  validation {
    condition     = var.ami_id == "" || can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be empty or an AMI id such as ami-0123456789abcdef0."
  }
}

variable "key_name" {
  description = "Name of the EC2 key pair whose public key is installed for the login user."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of the customer-managed KMS key that encrypts the root volume."
  type        = string
}

variable "root_volume_size_gb" {
  description = "(Optional) Size of the encrypted root volume in GiB."
  type        = number
  default     = 16

  validation {
    condition     = var.root_volume_size_gb >= 8 && var.root_volume_size_gb <= 200
    error_message = "root_volume_size_gb must be between 8 and 200."
  }
}
