variable "name" {
  description = "Name prefix of every resource (and the S3 bucket's, with a random suffix)."
  type        = string
  default     = "wolf"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name: 2 to 21 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "ssh_key_name" {
  description = "Name of an existing EC2 key pair for SSH to every VM."
  type        = string
}

variable "allowed_cidr" {
  description = "CIDR allowed to reach SSH, the API load balancer and Grafana (e.g. your address /32)."
  type        = string

  validation {
    condition     = can(cidrnetmask(var.allowed_cidr))
    error_message = "allowed_cidr must be an IPv4 CIDR such as 203.0.113.7/32."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the private network."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr))
    error_message = "vpc_cidr must be an IPv4 CIDR."
  }
}

variable "api_count" {
  description = "API VMs behind the load balancer."
  type        = number
  default     = 2

  validation {
    condition     = var.api_count >= 1 && var.api_count <= 20
    error_message = "api_count must be between 1 and 20."
  }
}

variable "manager_count" {
  description = "Manager (sandbox host) VMs."
  type        = number
  default     = 2

  validation {
    condition     = var.manager_count >= 1 && var.manager_count <= 50
    error_message = "manager_count must be between 1 and 50."
  }
}

variable "workers_per_manager" {
  description = "Pre-warmed sandboxes per manager (0: the number of vCPUs)."
  type        = number
  default     = 0

  validation {
    condition     = var.workers_per_manager >= 0 && var.workers_per_manager <= 256
    error_message = "workers_per_manager must be between 0 and 256."
  }
}

variable "instance_types" {
  description = "Instance type per role."
  type = object({
    nats       = string
    postgres   = string
    api        = string
    manager    = string
    loadgen    = string
    monitoring = string
  })
  default = {
    nats       = "t3.small"
    postgres   = "m6i.large"
    api        = "c6i.large"
    manager    = "c6i.2xlarge"
    loadgen    = "c6i.large"
    monitoring = "t3.medium"
  }
}

variable "wolf_release_url" {
  description = "URL of a release tarball (bin/wolf, bin/loadgen, deploy/, dashboards/). Empty: each VM builds Wolf from wolf_git_url."
  type        = string
  default     = ""

  validation {
    condition     = var.wolf_release_url == "" || can(regex("^https://", var.wolf_release_url))
    error_message = "wolf_release_url must be empty or an https:// URL."
  }
}

variable "wolf_git_url" {
  description = "Git repository to build Wolf from when no release URL is given."
  type        = string
  default     = "https://github.com/wolf-exec/wolf.git"
}

variable "wolf_git_ref" {
  description = "Branch, tag or commit to build."
  type        = string
  default     = "main"
}

variable "run_loadgen" {
  description = "Run the load generator once the stack is up and upload its results to the bucket (results/)."
  type        = bool
  default     = true
}

variable "loadgen_rps" {
  description = "Arrival rate of that run, jobs/s."
  type        = number
  default     = 5

  validation {
    condition     = var.loadgen_rps > 0 && var.loadgen_rps <= 10000
    error_message = "loadgen_rps must be in (0, 10000]."
  }
}

variable "loadgen_duration" {
  description = "Measured duration of that run (loadgen --duration syntax: 60s, 5m)."
  type        = string
  default     = "60s"

  validation {
    condition     = can(regex("^[0-9]+(ms|s|m)$", var.loadgen_duration))
    error_message = "loadgen_duration must look like 60s, 500ms or 5m."
  }
}
