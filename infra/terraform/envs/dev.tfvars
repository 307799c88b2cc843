# Development: one NAT gateway, one server, one agent, no DocumentDB: the ca4-platform chart runs
# MongoDB in-cluster (values-dev.yaml, mongodb.enabled) and make ca4-deploy-app uses its URL.
# operator_cidrs and ssh_public_key come from CA4_OPERATOR_CIDR / CA4_SSH_PUBLIC_KEY_FILE via make.
environment        = "dev"
aws_region         = "eu-west-1"
availability_zones = ["eu-west-1a", "eu-west-1b"]
vpc_cidr           = "10.40.0.0/16"
single_nat_gateway = true

k3s_server_count         = 1
k3s_agent_count          = 1
k3s_server_instance_type = "t3.large"
# Each node's data volume holds its local-path PVCs: Kafka 5Gi + Prometheus 5Gi + Loki 5Gi +
# MongoDB 5Gi.
k3s_data_volume_size_gb = 50
k3s_agent_instance_type = "t3.large"

documentdb_enabled = false
