terraform {
  # Root stack: exact pins. Commit .terraform.lock.hcl after the first `terraform init` with
  # `terraform providers lock -platform=linux_amd64 -platform=darwin_arm64` (see docs/provisioning.md).
  required_version = "~> 1.11.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "6.28.0"
    }
  }

  # Remote state in S3 with native lock files (Terraform >= 1.10, no DynamoDB table). Partial
  # configuration: bucket, key and region come from `make ca4-apply` (-backend-config=...), so one
  # stack serves dev and prod with separate state keys. See docs/provisioning.md, "Remote state".
  backend "s3" {
    encrypt      = true
    use_lockfile = true
  }
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = merge(var.tags, {
      "ca4:environment" = var.environment
      "ca4:managed-by"  = "terraform"
      "ca4:stack"       = "infra/terraform/stacks/ca4"
    })
  }
}
