################################################################################
# Naming and tagging
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

################################################################################
# Network
################################################################################

variable "vpc_id" {
  description = "ID of the VPC the security groups belong to."
  type        = string
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC: the only source K3s node egress may reach on any port."
  type        = string

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "vpc_cidr must be a valid IPv4 CIDR."
  }
}

################################################################################
# Who may connect
################################################################################

variable "operator_cidrs" {
  description = "CIDRs allowed to SSH to the bastion (the operators' public addresses, usually /32s). Never 0.0.0.0/0."
  type        = list(string)

  validation {
    condition     = length(var.operator_cidrs) > 0 && alltrue([for c in var.operator_cidrs : can(cidrhost(c, 0)) && !startswith(c, "0.0.0.0/")])
    error_message = "operator_cidrs must be a non-empty list of valid IPv4 CIDRs, none of them 0.0.0.0/0."
  }
}

variable "ingress_cidrs" {
  description = "(Optional) CIDRs allowed to reach the public HTTPS ingress (the processor API). Defaults to everyone: Colab runtimes have no fixed address."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.ingress_cidrs) > 0 && alltrue([for c in var.ingress_cidrs : can(cidrhost(c, 0))])
    error_message = "ingress_cidrs must be a non-empty list of valid IPv4 CIDRs."
  }
}

variable "kafka_tunnel_node_ports" {
  description = "(Optional) NodePort range (from, to) of the per-broker Kafka tunnel services; only the bastion may reach it."
  type        = object({ from = number, to = number })
  default     = { from = 30094, to = 30096 }

  validation {
    condition     = var.kafka_tunnel_node_ports.from >= 30000 && var.kafka_tunnel_node_ports.to <= 32767 && var.kafka_tunnel_node_ports.from <= var.kafka_tunnel_node_ports.to
    error_message = "kafka_tunnel_node_ports must lie inside the Kubernetes NodePort range 30000-32767 with from <= to."
  }
}

################################################################################
# Egress
################################################################################

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
