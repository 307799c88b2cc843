output "endpoint" {
  description = "Cluster (writer) endpoint, or null when the cluster is not created."
  value       = try(aws_docdb_cluster.this[0].endpoint, null)
}

output "port" {
  description = "Port of the cluster, or null when the cluster is not created."
  value       = try(aws_docdb_cluster.this[0].port, null)
}

output "master_user_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the master credentials (build CA4_MONGO_URL from it)."
  value       = try(aws_docdb_cluster.this[0].master_user_secret[0].secret_arn, null)
}
