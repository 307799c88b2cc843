terraform {
  # Reusable module: minimum versions only; the root stack pins exact versions.
  required_version = ">= 1.11.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.0"
    }
  }
}
