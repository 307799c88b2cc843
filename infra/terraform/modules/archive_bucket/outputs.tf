output "bucket_name" {
  description = "Name of the archive bucket (CA4_S3_BUCKET)."
  value       = try(aws_s3_bucket.this.id, null)
}

output "bucket_arn" {
  description = "ARN of the archive bucket."
  value       = try(aws_s3_bucket.this.arn, null)
}

output "bucket_region" {
  description = "Region of the archive bucket (CA4_S3_REGION)."
  value       = try(aws_s3_bucket.this.region, null)
}
