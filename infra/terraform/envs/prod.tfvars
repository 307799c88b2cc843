# Production: NAT per zone, HA control plane (3 servers, embedded etcd), DocumentDB with a replica.
environment        = "prod"
aws_region         = "eu-west-1"
availability_zones = ["eu-west-1a", "eu-west-1b"]
vpc_cidr           = "10.41.0.0/16"
single_nat_gateway = false

k3s_server_count         = 3
k3s_agent_count          = 3
k3s_server_instance_type = "m6i.large"
# Each node's data volume holds its local-path PVCs: Kafka 80Gi + Prometheus 50Gi + Loki 50Gi if they share a node.
k3s_data_volume_size_gb = 200
k3s_agent_instance_type = "m6i.xlarge"

documentdb_enabled        = true
documentdb_instance_count = 2
documentdb_instance_class = "db.r6g.large"
