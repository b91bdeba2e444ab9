# The Wolf distributed testbed on EC2: a private network, a 3-node NATS JetStream cluster, a
# PostgreSQL VM, an S3 bucket, N API VMs behind an application load balancer, M manager VMs, a
# loadgen VM and a monitoring VM (Prometheus, Grafana with dashboards/, Tempo for traces).
# Every VM is configured by cloud-init (../../cloud-init/<role>.yaml.tftpl), which runs
# deploy/install.sh for its role.

data "aws_availability_zones" "available" {
  state = "available"
}

data "aws_ami" "debian" {
  most_recent = true
  owners      = ["136693071363"] # Debian

  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

resource "random_id" "bucket" {
  byte_length = 4
}

locals {
  azs          = slice(data.aws_availability_zones.available.names, 0, 2)
  subnet_cidrs = [cidrsubnet(var.vpc_cidr, 8, 1), cidrsubnet(var.vpc_cidr, 8, 2)]

  # Fixed private addresses for the servers the others name in their configuration.
  nats_ips      = [for i in range(3) : cidrhost(local.subnet_cidrs[0], 10 + i)]
  postgres_ip   = cidrhost(local.subnet_cidrs[0], 20)
  monitoring_ip = cidrhost(local.subnet_cidrs[0], 30)

  nats_urls    = join(",", [for ip in local.nats_ips : "nats://${ip}:4222"])
  database_url = "postgres://wolf@${local.postgres_ip}:5432/wolf"
  bucket       = "${var.name}-jobs-${random_id.bucket.hex}"

  # What every role's user-data is rendered with.
  common = {
    wolf_release_url = var.wolf_release_url
    wolf_git_url     = var.wolf_git_url
    wolf_git_ref     = var.wolf_git_ref
    nats_urls        = local.nats_urls
    database_url     = local.database_url
    s3_endpoint      = "https://s3.${var.region}.amazonaws.com"
    s3_bucket        = local.bucket
    s3_region        = var.region
    monitoring_ip    = local.monitoring_ip
  }
}

# --- network ----------------------------------------------------------------------------

resource "aws_vpc" "main" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = { Name = var.name }
}

resource "aws_internet_gateway" "main" {
  vpc_id = aws_vpc.main.id
}

resource "aws_subnet" "main" {
  count                   = 2
  vpc_id                  = aws_vpc.main.id
  cidr_block              = local.subnet_cidrs[count.index]
  availability_zone       = local.azs[count.index]
  map_public_ip_on_launch = true
  tags                    = { Name = "${var.name}-${count.index}" }
}

resource "aws_route_table" "main" {
  vpc_id = aws_vpc.main.id

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.main.id
  }
}

resource "aws_route_table_association" "main" {
  count          = 2
  subnet_id      = aws_subnet.main[count.index].id
  route_table_id = aws_route_table.main.id
}

# Inside the network everything may talk to everything; from outside only allowed_cidr, and
# only SSH, the load balancer (HTTP) and Grafana.
resource "aws_security_group" "internal" {
  name        = "${var.name}-internal"
  description = "Wolf VMs"
  vpc_id      = aws_vpc.main.id

  ingress {
    description = "within the network"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = [var.vpc_cidr]
  }

  ingress {
    description = "SSH"
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = [var.allowed_cidr]
  }

  ingress {
    description = "Grafana"
    from_port   = 3000
    to_port     = 3000
    protocol    = "tcp"
    cidr_blocks = [var.allowed_cidr]
  }

  egress {
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group" "lb" {
  name        = "${var.name}-lb"
  description = "Wolf API load balancer"
  vpc_id      = aws_vpc.main.id

  ingress {
    description = "HTTP API"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = [var.allowed_cidr, var.vpc_cidr]
  }

  egress {
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = [var.vpc_cidr]
  }
}

# --- object store and the VMs' access to it ---------------------------------------------

resource "aws_s3_bucket" "jobs" {
  bucket        = local.bucket
  force_destroy = true
}

resource "aws_s3_bucket_public_access_block" "jobs" {
  bucket                  = aws_s3_bucket.jobs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "bucket" {
  statement {
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.jobs.arn}/*"]
  }
  statement {
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.jobs.arn]
  }
}

resource "aws_iam_role" "vm" {
  name               = "${var.name}-vm"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
}

resource "aws_iam_role_policy" "bucket" {
  name   = "${var.name}-bucket"
  role   = aws_iam_role.vm.id
  policy = data.aws_iam_policy_document.bucket.json
}

resource "aws_iam_instance_profile" "vm" {
  name = "${var.name}-vm"
  role = aws_iam_role.vm.name
}

# --- VMs ----------------------------------------------------------------------------------

resource "aws_instance" "nats" {
  count                  = 3
  ami                    = data.aws_ami.debian.id
  instance_type          = var.instance_types.nats
  subnet_id              = aws_subnet.main[0].id
  private_ip             = local.nats_ips[count.index]
  key_name               = var.ssh_key_name
  vpc_security_group_ids = [aws_security_group.internal.id]
  user_data = templatefile("${path.module}/../../cloud-init/nats.yaml.tftpl", merge(local.common, {
    node_name = "nats-${count.index}"
    routes    = join(",", [for ip in local.nats_ips : "nats-route://${ip}:6222"])
  }))
  root_block_device {
    volume_size = 20
  }
  tags = { Name = "${var.name}-nats-${count.index}", Role = "nats" }
}

resource "aws_instance" "postgres" {
  ami                    = data.aws_ami.debian.id
  instance_type          = var.instance_types.postgres
  subnet_id              = aws_subnet.main[0].id
  private_ip             = local.postgres_ip
  key_name               = var.ssh_key_name
  vpc_security_group_ids = [aws_security_group.internal.id]
  user_data = templatefile("${path.module}/../../cloud-init/postgres.yaml.tftpl", merge(local.common, {
    allowed_cidr = var.vpc_cidr
  }))
  root_block_device {
    volume_size = 50
  }
  tags = { Name = "${var.name}-postgres", Role = "postgres" }
}

resource "aws_instance" "api" {
  count                  = var.api_count
  ami                    = data.aws_ami.debian.id
  instance_type          = var.instance_types.api
  subnet_id              = aws_subnet.main[count.index % 2].id
  key_name               = var.ssh_key_name
  iam_instance_profile   = aws_iam_instance_profile.vm.name
  vpc_security_group_ids = [aws_security_group.internal.id]
  user_data = templatefile("${path.module}/../../cloud-init/api.yaml.tftpl", merge(local.common, {
    migrate = count.index == 0
  }))
  tags       = { Name = "${var.name}-api-${count.index}", Role = "api" }
  depends_on = [aws_instance.nats, aws_instance.postgres]
}

resource "aws_instance" "manager" {
  count                  = var.manager_count
  ami                    = data.aws_ami.debian.id
  instance_type          = var.instance_types.manager
  subnet_id              = aws_subnet.main[0].id
  key_name               = var.ssh_key_name
  iam_instance_profile   = aws_iam_instance_profile.vm.name
  vpc_security_group_ids = [aws_security_group.internal.id]
  user_data = templatefile("${path.module}/../../cloud-init/manager.yaml.tftpl", merge(local.common, {
    workers = var.workers_per_manager
  }))
  root_block_device {
    volume_size = 30
  }
  tags       = { Name = "${var.name}-manager-${count.index}", Role = "manager" }
  depends_on = [aws_instance.nats, aws_instance.postgres]
}

resource "aws_instance" "monitoring" {
  ami                    = data.aws_ami.debian.id
  instance_type          = var.instance_types.monitoring
  subnet_id              = aws_subnet.main[0].id
  private_ip             = local.monitoring_ip
  key_name               = var.ssh_key_name
  vpc_security_group_ids = [aws_security_group.internal.id]
  user_data = templatefile("${path.module}/../../cloud-init/monitoring.yaml.tftpl", merge(local.common, {
    api_targets     = join(",", [for i in aws_instance.api : "${i.private_ip}:8080"])
    manager_targets = join(",", [for i in aws_instance.manager : "${i.private_ip}:9100"])
  }))
  root_block_device {
    volume_size = 30
  }
  tags = { Name = "${var.name}-monitoring", Role = "monitoring" }
}

resource "aws_instance" "loadgen" {
  ami                    = data.aws_ami.debian.id
  instance_type          = var.instance_types.loadgen
  subnet_id              = aws_subnet.main[0].id
  key_name               = var.ssh_key_name
  iam_instance_profile   = aws_iam_instance_profile.vm.name
  vpc_security_group_ids = [aws_security_group.internal.id]
  user_data = templatefile("${path.module}/../../cloud-init/loadgen.yaml.tftpl", merge(local.common, {
    api_url          = "http://${aws_lb.api.dns_name}"
    run_loadgen      = var.run_loadgen
    loadgen_rps      = var.loadgen_rps
    loadgen_duration = var.loadgen_duration
  }))
  tags       = { Name = "${var.name}-loadgen", Role = "loadgen" }
  depends_on = [aws_instance.api, aws_instance.manager]
}

# --- the API's load balancer ----------------------------------------------------------------

resource "aws_lb" "api" {
  name               = "${var.name}-api"
  load_balancer_type = "application"
  subnets            = aws_subnet.main[*].id
  security_groups    = [aws_security_group.lb.id]
  # Long polls (wait=true) hold a request up to the API's wait limit.
  idle_timeout = 330
}

resource "aws_lb_target_group" "api" {
  name     = "${var.name}-api"
  port     = 8080
  protocol = "HTTP"
  vpc_id   = aws_vpc.main.id

  health_check {
    path                = "/readyz"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_target_group_attachment" "api" {
  count            = var.api_count
  target_group_arn = aws_lb_target_group.api.arn
  target_id        = aws_instance.api[count.index].id
  port             = 8080
}

resource "aws_lb_listener" "api" {
  load_balancer_arn = aws_lb.api.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }
}
