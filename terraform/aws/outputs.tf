output "api_url" {
  description = "The Wolf API behind the load balancer (POST /job, GET /job/{id}, ...)."
  value       = "http://${aws_lb.api.dns_name}"
}

output "grafana_url" {
  description = "Grafana with the Wolf dashboard (admin / the instance id of the monitoring VM)."
  value       = "http://${aws_instance.monitoring.public_ip}:3000"
}

output "nats_urls" {
  description = "The NATS JetStream cluster (private addresses)."
  value       = local.nats_urls
}

output "database_url" {
  description = "PostgreSQL (private address)."
  value       = local.database_url
}

output "bucket" {
  description = "The S3 bucket holding code, outputs and loadgen results (results/)."
  value       = aws_s3_bucket.jobs.id
}

output "ssh" {
  description = "SSH to each VM by role."
  value = {
    loadgen    = "ssh admin@${aws_instance.loadgen.public_ip}"
    monitoring = "ssh admin@${aws_instance.monitoring.public_ip}"
    postgres   = "ssh admin@${aws_instance.postgres.public_ip}"
    nats       = [for i in aws_instance.nats : "ssh admin@${i.public_ip}"]
    api        = [for i in aws_instance.api : "ssh admin@${i.public_ip}"]
    manager    = [for i in aws_instance.manager : "ssh admin@${i.public_ip}"]
  }
}

output "results" {
  description = "Where the loadgen VM uploads its results when run_loadgen is true."
  value       = "s3://${aws_s3_bucket.jobs.id}/results/"
}
