################################################################################
# Naming and placement
################################################################################

variable "name" {
  description = "Name prefix for every resource of this module (e.g. ca4-dev)."
  type        = string
}

variable "tags" {
  description = "(Optional) Tags merged into every resource."
  type        = map(string)
  default     = {}
}

variable "vpc_id" {
  description = "ID of the VPC (for the ingress target group)."
  type        = string
}

variable "private_subnet_ids" {
  description = "IDs of the private subnets the K3s nodes are spread over."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 1
    error_message = "private_subnet_ids must name at least one private subnet."
  }
}

variable "public_subnet_ids" {
  description = "IDs of the public subnets of the internet-facing ingress load balancer."
  type        = list(string)

  validation {
    condition     = length(var.public_subnet_ids) >= 2
    error_message = "public_subnet_ids must name at least two public subnets (one per zone)."
  }
}

variable "nodes_security_group_id" {
  description = "ID of the K3s node security group."
  type        = string
}

variable "ingress_security_group_id" {
  description = "ID of the ingress load balancer security group."
  type        = string
}

################################################################################
# Nodes
################################################################################

variable "server_count" {
  description = "(Optional) Number of K3s servers: 1, or 3 for an HA embedded-etcd control plane."
  type        = number
  default     = 1

  validation {
    condition     = contains([1, 3], var.server_count)
    error_message = "server_count must be 1 or 3 (embedded etcd needs an odd quorum)."
  }
}

variable "agent_count" {
  description = "(Optional) Number of K3s agents (workers)."
  type        = number
  default     = 2

  validation {
    condition     = var.agent_count >= 0 && var.agent_count <= 20 && floor(var.agent_count) == var.agent_count
    error_message = "agent_count must be a whole number between 0 and 20."
  }
}

variable "server_instance_type" {
  description = "(Optional) EC2 instance type of the K3s servers."
  type        = string
  default     = "t3.large"
}

variable "agent_instance_type" {
  description = "(Optional) EC2 instance type of the K3s agents."
  type        = string
  default     = "t3.large"
}

variable "ami_id" {
  description = "(Optional) AMI of the nodes; empty picks the latest Ubuntu 24.04 LTS from Canonical."
  type        = string
  default     = ""

  validation {
    condition     = var.ami_id == "" || can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be empty or an AMI id such as ami-0123456789abcdef0."
  }
}

variable "key_name" {
  description = "Name of the EC2 key pair installed on the nodes (used through the bastion)."
  type        = string
}

variable "root_volume_size_gb" {
  description = "(Optional) Size of each node's encrypted root volume in GiB (OS, images, K3s state; the PVCs live on the data volume)."
  type        = number
  default     = 50

  validation {
    condition     = var.root_volume_size_gb >= 20 && var.root_volume_size_gb <= 1000
    error_message = "root_volume_size_gb must be between 20 and 1000."
  }
}

variable "data_volume_size_gb" {
  description = "(Optional) Size of each node's encrypted data volume in GiB, mounted at /var/lib/rancher/k3s/storage: the local-path PVCs (a Kafka broker's log: kafka.persistence.size) live there."
  type        = number
  default     = 100

  validation {
    condition     = var.data_volume_size_gb >= 20 && var.data_volume_size_gb <= 4000
    error_message = "data_volume_size_gb must be between 20 and 4000."
  }
}

variable "kms_key_arn" {
  description = "ARN of the customer-managed KMS key (root volumes, archive bucket objects)."
  type        = string
}

################################################################################
# Permissions and ingress
################################################################################

variable "archive_bucket_arn" {
  description = "ARN of the S3 archive bucket: the only bucket the node role may touch."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.archive_bucket_arn))
    error_message = "archive_bucket_arn must be an S3 bucket ARN."
  }
}

variable "enable_deletion_protection" {
  description = "(Optional) Protect the ingress load balancer from deletion (set true in prod)."
  type        = bool
  default     = false
}
