################################################################################
# tap — spot-GPU training stack, in one file.
#
# provider.tf (supplied by the platform team) holds the terraform and provider blocks;
# this file holds every variable, local, data source, resource and output.
# Sections: Variables · Locals · Data · Network · Security · Storage · Tracking ·
# Hyperparameters · IAM · Monitoring · Compute · Outputs.
################################################################################

################################################################################
# Variables
################################################################################

variable "aws_region" {
  description = "AWS region of the stack (used by provider.tf)."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$", var.aws_region))
    error_message = "aws_region must look like an AWS region name, e.g. us-east-1 or eu-west-2."
  }
}

variable "environment" {
  description = "Environment name (dev, staging, prod, ...). Part of every name and the Environment metric dimension."
  type        = string
  default     = "dev"

  validation {
    # S3 bucket names must end with a letter or digit, and the environment may end them.
    condition     = can(regex("^[a-z]([a-z0-9-]{0,14}[a-z0-9])?$", var.environment))
    error_message = "environment must be 1-16 characters: lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen (it becomes part of S3 bucket names)."
  }
}

variable "project" {
  description = "Project name used as the prefix of resource names and the Project tag."
  type        = string
  default     = "tap"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,18}[a-z0-9])?$", var.project))
    error_message = "project must be 1-20 characters: lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "bucket_suffix" {
  description = "Appended to the bucket names ml-training-data-<env> and ml-model-artifacts-<env> (S3 names are global, so plain names are almost certainly taken). null (default): \"-<account id>-<region>\", unique to this account and region. \"\": no suffix. Or your own, e.g. \"-acme\"."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_suffix == null || (can(regex("^(-[a-z0-9]+)*$", var.bucket_suffix)) && length(coalesce(var.bucket_suffix, "-")) <= 24)
    error_message = "bucket_suffix must be null, empty, or hyphen-separated lowercase letters/digits starting with '-', at most 24 characters."
  }
}

variable "tags" {
  description = "Extra tags merged into every taggable resource (after the stack's own Project/Environment/ManagedBy tags). Keys are limited to what instance metadata tags allow (letters, digits and + - = . , _ : @), since the nodes read their tags from IMDS."
  type        = map(string)
  default     = {}

  # instance_metadata_tags = "enabled" makes EC2 refuse to launch an instance whose tag key
  # holds '/' or a space (or any character outside this set); "aws:" keys are reserved.
  validation {
    condition     = alltrue([for k, v in var.tags : can(regex("^[A-Za-z0-9+=._:@,-]{1,128}$", k)) && !startswith(lower(k), "aws:") && length(v) <= 256])
    error_message = "tags: every key must be 1-128 characters of letters, digits and + - = . , _ : @ (no '/' or spaces: instance metadata tags refuse them), must not start with \"aws:\", and every value must be at most 256 characters."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC (/16 to /20): four private subnets' worth (prefix + 4) and NAT subnets of prefix + 8, which AWS allows down to /28."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    # Public (NAT) subnets are cidrsubnet(vpc_cidr, 8, ...): /20 + 8 = /28, the smallest subnet AWS accepts.
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be a valid IPv4 CIDR with a prefix length between /16 and /20 (its NAT subnets are 8 bits longer, and AWS accepts subnets down to /28 only)."
  }
}

variable "availability_zones" {
  description = "Exactly three AZ names for the private subnets. Empty (default): the first three available AZs of the region."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.availability_zones) == 0 || (length(var.availability_zones) == 3 && length(distinct(var.availability_zones)) == 3)
    error_message = "availability_zones must be empty or list exactly three distinct AZ names."
  }
}

variable "nat_gateway_mode" {
  description = <<-EOT
    Outbound internet for the private subnets: "none" (no NAT; nodes reach S3/DynamoDB through gateway endpoints and
    SSM/Logs/CloudWatch through interface endpoints; apt/pip unreachable, so a Volta driver install at boot needs
    custom_ami_id with the driver baked in), "single" (one NAT gateway, ~$33/month + $0.045/GB; an AZ outage cuts
    egress of the other two), "per_az" (three, ~$99/month + $0.045/GB; no cross-AZ dependency).
  EOT
  type        = string
  default     = "single"

  validation {
    condition     = contains(["none", "single", "per_az"], var.nat_gateway_mode)
    error_message = "nat_gateway_mode must be one of \"none\", \"single\" or \"per_az\"."
  }
}

variable "enable_interface_endpoints" {
  description = "Create interface endpoints (ssm, ssmmessages, ec2messages, logs, monitoring; ec2 too with scale_to_zero_after_idle_minutes) in the private subnets (~$7.30/month each per AZ). null: only when nat_gateway_mode = \"none\"."
  type        = bool
  default     = null
}

variable "enable_flow_logs" {
  description = "Send VPC flow logs (all traffic) to a CloudWatch log group of the stack."
  type        = bool
  default     = true
}

variable "instance_types" {
  description = "NVIDIA GPU instance types of the fleet, most preferred first. More than one type diversifies spot capacity (one fleet override per type and private subnet)."
  type        = list(string)
  default     = ["p3.2xlarge"]

  validation {
    condition     = length(var.instance_types) >= 1 && length(var.instance_types) <= 16 && alltrue([for t in var.instance_types : can(regex("^(p3|p3dn|p4d|p4de|p5|p5e|p5en|p6-b200|g4dn|g5|g6|g6e|gr6)\\.[0-9a-z]+$", t))])
    error_message = "instance_types must list 1-16 NVIDIA GPU instance types of the families p3, p3dn, p4d, p4de, p5, p5e, p5en, p6-b200, g4dn, g5, g6, g6e or gr6 (e.g. p3.2xlarge)."
  }
}

variable "target_capacity" {
  description = "Number of spot instances the EC2 Fleet maintains."
  type        = number
  default     = 6

  validation {
    condition     = var.target_capacity >= 0 && var.target_capacity <= 500 && floor(var.target_capacity) == var.target_capacity
    error_message = "target_capacity must be a whole number between 0 and 500."
  }
}

variable "spot_allocation_strategy" {
  description = "EC2 Fleet spot allocation strategy. capacity-optimized-prioritized (default) picks the pools with the most spare capacity and, among pools alike, honours the override priorities: the home AZ (home_availability_zone) first, then the order of instance_types. price-capacity-optimized (AWS's recommendation for single-node work) picks the deepest pools among the cheapest but ignores priorities, so it cannot keep the fleet in one AZ: it needs home_availability_zone = \"none\"."
  type        = string
  default     = "capacity-optimized-prioritized"

  validation {
    condition     = contains(["price-capacity-optimized", "capacity-optimized", "capacity-optimized-prioritized", "lowest-price", "diversified"], var.spot_allocation_strategy)
    error_message = "spot_allocation_strategy must be price-capacity-optimized, capacity-optimized, capacity-optimized-prioritized, lowest-price or diversified."
  }
}

variable "home_availability_zone" {
  description = <<-EOT
    The AZ where the fleet's nodes gather, so that a multi-node job (which tap places in one AZ:
    traffic between AZs is billed at $0.01/GB each way) finds its nodes together. Its subnet's
    fleet overrides get the best priorities and the other two AZs stay as fallback when the home
    AZ has no spot capacity. "" (default): the first of the fleet's three AZs. An AZ name: one of
    them. "none": no home; the fleet spreads over the three AZs by the allocation strategy alone
    (fine for single-node work; multi-node jobs then wait more often for one AZ to hold them).
  EOT
  type        = string
  default     = ""

  validation {
    condition     = var.home_availability_zone == "" || var.home_availability_zone == "none" || can(regex("^[a-z]{2}(-[a-z]+)+-[0-9][a-z]$", var.home_availability_zone))
    error_message = "home_availability_zone must be \"\" (the first of the fleet's AZs), \"none\" or an AZ name such as us-east-1b."
  }

  validation {
    condition     = var.home_availability_zone == "none" || var.spot_allocation_strategy == "capacity-optimized-prioritized"
    error_message = "home_availability_zone needs spot_allocation_strategy = \"capacity-optimized-prioritized\", the only spot strategy that reads override priorities; set home_availability_zone = \"none\" to spread the fleet by another strategy."
  }
}

variable "rebalance_termination_delay_seconds" {
  description = "Capacity rebalancing (launch-before-terminate): when EC2 signals elevated interruption risk for a node, the fleet launches its replacement first and terminates the old node this many seconds later, so runs there can write a final checkpoint. Both nodes are billed meanwhile (~$0.15 per rebalance for p3.2xlarge spot at 600 s)."
  type        = number
  default     = 600

  # The provider and AWS accept 120-7200 s (aws provider: termination_delay IntBetween(120, 7200)).
  validation {
    condition     = var.rebalance_termination_delay_seconds >= 120 && var.rebalance_termination_delay_seconds <= 7200 && floor(var.rebalance_termination_delay_seconds) == var.rebalance_termination_delay_seconds
    error_message = "rebalance_termination_delay_seconds must be a whole number of seconds from 120 to 7200."
  }
}

variable "create_ec2_fleet_service_linked_role" {
  description = "Create the AWSServiceRoleForEC2Fleet service-linked role, which a maintain fleet launches through and which must exist before an account's first CreateFleet. false (default): it must exist already (the plan fails naming the one-line fix: aws iam create-service-linked-role --aws-service-name ec2fleet.amazonaws.com). Only one stack per account can own it."
  type        = bool
  default     = false
}

variable "ami_ssm_parameter" {
  description = "Public SSM parameter holding the AMI id (latest AWS Deep Learning Base OSS NVIDIA driver AMI, Ubuntu 22.04). Its open kernel modules do not drive Volta (p3); user_data then installs volta_driver_package."
  type        = string
  default     = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"

  validation {
    condition     = can(regex("^/aws/service/", var.ami_ssm_parameter))
    error_message = "ami_ssm_parameter must be a public AWS SSM parameter path starting with /aws/service/."
  }
}

variable "custom_ami_id" {
  description = "Use this AMI instead of the SSM lookup (e.g. an image with a Volta-capable driver baked in, required for p3 with nat_gateway_mode = \"none\"). It needs bash, curl, and the AWS CLI when tap-agent comes from S3."
  type        = string
  default     = null

  validation {
    condition     = var.custom_ami_id == null || can(regex("^ami-[0-9a-f]{8}([0-9a-f]{9})?$", var.custom_ami_id))
    error_message = "custom_ami_id must be null or an AMI id such as ami-0123456789abcdef0."
  }
}

variable "volta_driver_package" {
  description = "Ubuntu package installed by user_data when nvidia-smi fails at boot (Volta needs the proprietary driver; R580 is its last branch)."
  type        = string
  default     = "nvidia-driver-580-server"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.+-]+$", var.volta_driver_package))
    error_message = "volta_driver_package must be a Debian package name."
  }
}

variable "max_driver_failures" {
  description = "How many nodes of one AMI may fail to bring up the NVIDIA driver before the next one stays up (drained, reported unhealthy, alarm) instead of powering off to be replaced: a broken AMI must not make the fleet launch and kill p3 nodes forever. Counted in the experiment table per AMI."
  type        = number
  default     = 3

  validation {
    condition     = var.max_driver_failures >= 1 && var.max_driver_failures <= 100 && floor(var.max_driver_failures) == var.max_driver_failures
    error_message = "max_driver_failures must be a whole number from 1 to 100."
  }
}

variable "root_volume_size_gb" {
  description = "Size of the encrypted gp3 root volume in GiB (the DLAMI needs ~100 GiB; datasets and checkpoints stage here)."
  type        = number
  default     = 200

  validation {
    condition     = var.root_volume_size_gb >= 100 && var.root_volume_size_gb <= 16384
    error_message = "root_volume_size_gb must be between 100 and 16384."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key ARN used for S3, DynamoDB, EBS, SSM SecureStrings, the log groups and SNS. null: AWS-owned/managed keys (SSE-S3 for S3). The key policy must allow logs.<region>.amazonaws.com, cloudwatch.amazonaws.com and the EC2 Spot/Fleet service-linked roles (encrypted root volumes)."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]{36}$", var.kms_key_arn))
    error_message = "kms_key_arn must be null or a KMS key ARN (arn:aws:kms:<region>:<account>:key/<uuid>)."
  }
}

variable "archive_storage_class" {
  description = "Storage class objects move to after archive_after_days. GLACIER_IR (default) keeps millisecond reads, so old training data and checkpoints stay usable; GLACIER / DEEP_ARCHIVE need a restore first."
  type        = string
  default     = "GLACIER_IR"

  validation {
    condition     = contains(["GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"], var.archive_storage_class)
    error_message = "archive_storage_class must be GLACIER_IR, GLACIER or DEEP_ARCHIVE."
  }
}

variable "archive_after_days" {
  description = "Days after creation before current object versions move to archive_storage_class."
  type        = number
  default     = 30

  validation {
    condition     = var.archive_after_days >= 1 && floor(var.archive_after_days) == var.archive_after_days
    error_message = "archive_after_days must be a whole number of at least 1."
  }
}

variable "noncurrent_archive_after_days" {
  description = "Days after an object version becomes noncurrent before it moves to archive_storage_class."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_archive_after_days >= 1 && floor(var.noncurrent_archive_after_days) == var.noncurrent_archive_after_days
    error_message = "noncurrent_archive_after_days must be a whole number of at least 1."
  }
}

variable "noncurrent_expiration_days" {
  description = "Days after an object version becomes noncurrent before it is deleted (must exceed noncurrent_archive_after_days)."
  type        = number
  default     = 180

  validation {
    condition     = var.noncurrent_expiration_days >= 2 && floor(var.noncurrent_expiration_days) == var.noncurrent_expiration_days
    error_message = "noncurrent_expiration_days must be a whole number of at least 2."
  }
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which unfinished multipart uploads (e.g. from an interrupted checkpoint upload) are aborted and their parts deleted."
  type        = number
  default     = 7

  validation {
    condition     = var.abort_incomplete_multipart_days >= 1 && floor(var.abort_incomplete_multipart_days) == var.abort_incomplete_multipart_days
    error_message = "abort_incomplete_multipart_days must be a whole number of at least 1."
  }
}

variable "s3_access_log_bucket" {
  description = "Existing bucket receiving S3 server access logs of both buckets (prefix s3-access/<bucket>/). null: no access logging."
  type        = string
  default     = null
}

variable "dynamodb_deletion_protection" {
  description = "Protect the experiment table against deletion (set false before destroying the stack)."
  type        = bool
  default     = true
}

variable "hparam_prefix" {
  description = "SSM Parameter Store path of the hyperparameters."
  type        = string
  default     = "/ml/hparams"

  validation {
    # SSM reserves names beginning with "aws" or "ssm" (any case).
    condition     = can(regex("^(/[A-Za-z0-9_.-]+)+$", var.hparam_prefix)) && !can(regex("^/(?i:aws|ssm)", var.hparam_prefix))
    error_message = "hparam_prefix must be an absolute SSM path without a trailing slash, e.g. /ml/hparams, and must not begin with /aws or /ssm (reserved by AWS)."
  }
}

variable "hparams" {
  description = "Initial hyperparameters, stored as SecureString <hparam_prefix>/<name>. Terraform seeds them; `tap params set` owns the values afterwards (changes to the values here are ignored once created)."
  type        = map(string)
  default = {
    learning_rate = "0.001"
    batch_size    = "32"
    epochs        = "10"
  }

  validation {
    condition     = alltrue([for k in ["learning_rate", "batch_size", "epochs"] : contains(keys(var.hparams), k)]) && alltrue([for k in keys(var.hparams) : can(regex("^[A-Za-z0-9_.-]{1,128}$", k))])
    error_message = "hparams must contain learning_rate, batch_size and epochs, and every name must be 1-128 characters of letters, digits, '_', '.' or '-'."
  }
}

variable "log_retention_days" {
  description = "Retention of the training log group (and VPC flow logs) in days."
  type        = number
  default     = 90

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of the values CloudWatch Logs accepts: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653."
  }
}

variable "training_log_paths" {
  description = "Files on the nodes that the CloudWatch agent ships to the training log group (`tap run` writes /var/log/tap/*.log)."
  type        = list(string)
  default     = ["/var/log/tap/*.log"]

  validation {
    condition     = alltrue([for p in var.training_log_paths : startswith(p, "/")])
    error_message = "training_log_paths must be absolute paths (globs allowed)."
  }
}

variable "alarm_email" {
  description = "E-mail address subscribed to the alarm topic (confirm the subscription mail). null: no subscription."
  type        = string
  default     = null

  validation {
    condition     = var.alarm_email == null || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alarm_email))
    error_message = "alarm_email must be null or an e-mail address."
  }
}

variable "low_gpu_utilization_percent" {
  description = "The low-utilization alarm fires when the fleet's average GPU utilization stays below this for low_gpu_utilization_minutes."
  type        = number
  default     = 20

  validation {
    condition     = var.low_gpu_utilization_percent > 0 && var.low_gpu_utilization_percent <= 100
    error_message = "low_gpu_utilization_percent must be in (0, 100]."
  }
}

variable "low_gpu_utilization_minutes" {
  description = "How long (minutes, multiple of 5) utilization must stay low before the alarm fires."
  type        = number
  default     = 30

  validation {
    condition     = var.low_gpu_utilization_minutes >= 5 && var.low_gpu_utilization_minutes <= 1440 && var.low_gpu_utilization_minutes % 5 == 0
    error_message = "low_gpu_utilization_minutes must be a multiple of 5 between 5 and 1440."
  }
}

variable "scale_to_zero_after_idle_minutes" {
  description = "Opt-in cost control: once every GPU of the fleet stayed below idle_gpu_utilization_percent in every minute for this long, tap-agent on the oldest node sets the fleet's target capacity to 0 (its nodes terminate; `tap fleet scale N` or the next terraform apply brings them back). 0 (the default) turns it off; otherwise 10 to 10080 (a week)."
  type        = number
  default     = 0

  validation {
    condition     = var.scale_to_zero_after_idle_minutes == 0 || (var.scale_to_zero_after_idle_minutes >= 10 && var.scale_to_zero_after_idle_minutes <= 10080 && floor(var.scale_to_zero_after_idle_minutes) == var.scale_to_zero_after_idle_minutes)
    error_message = "scale_to_zero_after_idle_minutes must be 0 (off) or a whole number of minutes from 10 to 10080."
  }
}

variable "idle_gpu_utilization_percent" {
  description = "For scale_to_zero_after_idle_minutes: a minute whose average GPU utilization is below this counts as idle."
  type        = number
  default     = 5

  validation {
    condition     = var.idle_gpu_utilization_percent > 0 && var.idle_gpu_utilization_percent <= 100
    error_message = "idle_gpu_utilization_percent must be in (0, 100]."
  }
}

variable "gpu_temperature_celsius" {
  description = "The high-temperature alarm fires when any GPU of the fleet exceeds this temperature for 10 minutes."
  type        = number
  default     = 85

  validation {
    condition     = var.gpu_temperature_celsius >= 50 && var.gpu_temperature_celsius <= 110
    error_message = "gpu_temperature_celsius must be between 50 and 110."
  }
}

variable "agent_s3_prefix" {
  description = "Key prefix in the model-artifacts bucket under which the tap-agent binary is stored (<prefix>/tap-agent)."
  type        = string
  default     = "tap/bin"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", var.agent_s3_prefix))
    error_message = "agent_s3_prefix must be a relative S3 key prefix without leading or trailing slash."
  }
}

variable "agent_binary_url" {
  description = "HTTPS URL the nodes download tap-agent from instead of s3://<artifacts bucket>/<agent_s3_prefix>/tap-agent."
  type        = string
  default     = null

  validation {
    condition     = var.agent_binary_url == null || can(regex("^https://", var.agent_binary_url))
    error_message = "agent_binary_url must be null or an https:// URL."
  }
}

variable "agent_binary_path" {
  description = "Local path of a tap-agent binary (e.g. target/release/tap-agent) that terraform apply uploads to the artifacts bucket, so one apply deploys it."
  type        = string
  default     = null
}

variable "cli_binary_path" {
  description = "Local path of a tap binary (e.g. target/release/tap) that terraform apply uploads beside tap-agent; the nodes install it so `tap launch` can run `tap run` there."
  type        = string
  default     = null
}

variable "agent_sample_interval_seconds" {
  description = "How often tap-agent samples every GPU."
  type        = number
  default     = 1

  validation {
    condition     = var.agent_sample_interval_seconds >= 1 && var.agent_sample_interval_seconds <= 60
    error_message = "agent_sample_interval_seconds must be between 1 and 60."
  }
}

variable "agent_publish_interval_seconds" {
  description = "How often tap-agent sends to CloudWatch. Datapoints are statistic sets per minute (or per interval below a minute); 600 sends ten minutes in one request (6 requests/hour) but alarms see data up to 10 minutes late."
  type        = number
  default     = 60

  validation {
    condition     = contains([10, 20, 30, 60, 120, 300, 600, 900], var.agent_publish_interval_seconds)
    error_message = "agent_publish_interval_seconds must be 10, 20, 30, 60, 120, 300, 600 or 900."
  }
}

variable "high_resolution_metrics" {
  description = "Publish GPU metrics at 1-second storage resolution (kept 3 hours; more expensive alarms)."
  type        = bool
  default     = false
}

variable "gpu_health_action" {
  description = "What tap-agent does on a fatal GPU finding (XID 79, uncorrected ECC, GPU lost or missing): replace (take no new work, let runs checkpoint, power off so the fleet replaces the node), drain (the same without the power-off) or dry-run (log only)."
  type        = string
  default     = "replace"

  validation {
    condition     = contains(["replace", "drain", "dry-run"], var.gpu_health_action)
    error_message = "gpu_health_action must be replace, drain or dry-run."
  }
}

################################################################################
# Locals
################################################################################

locals {
  name = "${var.project}-${var.environment}"
  # IAM names and dashboards are global to the account: the region keeps two stacks of one
  # environment in two regions apart.
  global_name = "${local.name}-${var.aws_region}"

  tags = merge(var.tags, {
    Project     = var.project
    Environment = var.environment
    ManagedBy   = "terraform"
    Stack       = local.name
  })

  # The metric contract. Mirrors crates/tap-core/src/contract.rs, which tap-agent publishes
  # from; `cargo test -p tap-core` fails if the two drift apart. A CloudWatch metric is
  # identified by its exact dimension set, so every alarm below uses one of these sets.
  metric_contract = {
    namespace = "Tap/GPU"
    dimension_sets = {
      gpu      = ["Environment", "InstanceId", "GpuUuid"]
      instance = ["Environment", "InstanceId"]
      fleet    = ["Environment"]
      zone     = ["Environment", "AvailabilityZone", "InstanceId"]
    }
    metrics = {
      gpu_utilization          = { name = "GPUUtilization", unit = "Percent", sets = ["gpu", "instance", "fleet"] }
      memory_utilization       = { name = "GPUMemoryUtilization", unit = "Percent", sets = ["gpu", "instance", "fleet"] }
      memory_used              = { name = "GPUMemoryUsed", unit = "Megabytes", sets = ["gpu"] }
      temperature              = { name = "GPUTemperature", unit = "None", sets = ["gpu", "fleet"] }
      power_draw               = { name = "GPUPowerDraw", unit = "None", sets = ["gpu", "instance"] }
      sm_clock                 = { name = "GPUSMClock", unit = "None", sets = ["gpu"] }
      ecc_uncorrected          = { name = "GPUECCUncorrectedErrors", unit = "Count", sets = ["gpu", "fleet"] }
      ecc_corrected            = { name = "GPUECCCorrectedErrors", unit = "Count", sets = ["gpu"] }
      throttled                = { name = "GPUThrottled", unit = "Percent", sets = ["gpu", "instance"] }
      retired_pages            = { name = "GPURetiredPages", unit = "Count", sets = ["gpu"] }
      unhealthy                = { name = "GPUUnhealthy", unit = "Count", sets = ["gpu", "instance", "fleet"] }
      heartbeat                = { name = "AgentHeartbeat", unit = "Count", sets = ["instance", "fleet"] }
      gpus_visible             = { name = "GPUsVisible", unit = "Count", sets = ["instance", "fleet"] }
      spool_dropped_datapoints = { name = "SpoolDroppedDatapoints", unit = "Count", sets = ["instance"] }
      spot_interruption_notice = { name = "SpotInterruptionNotice", unit = "Count", sets = ["instance", "fleet"] }
      rebalance_recommendation = { name = "RebalanceRecommendation", unit = "Count", sets = ["instance", "fleet"] }
      fleet_scaled_to_zero     = { name = "FleetScaledToZero", unit = "Count", sets = ["fleet"] }
      network_bytes_in         = { name = "NetworkBytesIn", unit = "Bytes", sets = ["zone"] }
      network_bytes_out        = { name = "NetworkBytesOut", unit = "Bytes", sets = ["zone"] }
    }
  }
  # Host metrics of the CloudWatch agent go to their own namespace (PutMetricData is conditioned on both).
  host_metric_namespace = "Tap/Host"

  dimension_values = { Environment = var.environment }

  azs = length(var.availability_zones) == 3 ? var.availability_zones : slice(data.aws_availability_zones.available.names, 0, 3)

  nat_gateway_count = { none = 0, single = 1, per_az = 3 }[var.nat_gateway_mode]

  # ec2 only where the agents call it (the idle rule's DescribeFleets and ModifyFleet).
  interface_endpoints = coalesce(var.enable_interface_endpoints, var.nat_gateway_mode == "none") ? toset(concat(["ssm", "ssmmessages", "ec2messages", "logs", "monitoring"], var.scale_to_zero_after_idle_minutes > 0 ? ["ec2"] : [])) : toset([])

  # The home AZ's index among the three (-1: named but not one of them, refused by the fleet's
  # precondition; null: no home AZ).
  home_az_index = var.home_availability_zone == "none" ? null : (var.home_availability_zone == "" ? 0 : try(index(local.azs, var.home_availability_zone), -1))
  home_az       = local.home_az_index == null ? null : try(local.azs[local.home_az_index], null)

  # One fleet override per (instance type, private subnet). Priority: the home AZ's subnet first
  # (1 .. number of types, in instance_types order), then the other two AZs alike (after every
  # home pool), so the fleet fills the home AZ while it has spot capacity and falls back to the
  # others when it has not. Priorities start at 1: the provider drops `priority = 0` from the
  # request (it sends only non-zero values, internal/service/ec2/ec2_fleet.go
  # expandFleetLaunchTemplateOverridesRequest). Only capacity-optimized-prioritized reads them.
  fleet_overrides = [
    for pair in setproduct(range(length(var.instance_types)), range(3)) : {
      instance_type = var.instance_types[pair[0]]
      subnet_id     = aws_subnet.private[pair[1]].id
      priority      = pair[0] + 1 + (local.home_az_index == null || local.home_az_index == pair[1] ? 0 : length(var.instance_types))
    }
  ]

  # null: unique to the account and region (at most 19 + 16 + 1 + 12 + 1 + 14 = 63 characters,
  # S3's limit, for the longest environment and region names).
  bucket_suffix = var.bucket_suffix != null ? var.bucket_suffix : "-${data.aws_caller_identity.current.account_id}-${var.aws_region}"
  buckets = {
    training_data   = "ml-training-data-${var.environment}${local.bucket_suffix}"
    model_artifacts = "ml-model-artifacts-${var.environment}${local.bucket_suffix}"
  }

  ami_id = var.custom_ami_id != null ? var.custom_ami_id : nonsensitive(data.aws_ssm_parameter.dlami[0].value)

  agent_s3_key = "${var.agent_s3_prefix}/tap-agent"
  agent_source = var.agent_binary_url != null ? var.agent_binary_url : "s3://${local.buckets.model_artifacts}/${local.agent_s3_key}"
  # The tap CLI comes from beside tap-agent (same prefix or URL directory).
  cli_s3_key = "${var.agent_s3_prefix}/tap"
  cli_source = var.agent_binary_url != null ? replace(var.agent_binary_url, "/[^/]*$/", "tap") : "s3://${local.buckets.model_artifacts}/${local.cli_s3_key}"
  # The stack as `tap` on a node sees it (tap launch runs `tap run` there). The same keys as
  # output.tap_config (a test holds them equal) but the fleet and the launch template, which
  # would make the launch template depend on itself.
  node_tap_config = {
    version             = 1
    stack               = local.name
    environment         = var.environment
    region              = var.aws_region
    training_bucket     = local.buckets.training_data
    artifacts_bucket    = local.buckets.model_artifacts
    table_name          = local.table_name
    log_group           = local.log_group_name
    hparam_prefix       = var.hparam_prefix
    metric_namespace    = local.metric_contract.namespace
    fleet_id            = ""
    fleet_tag           = { key = local.fleet_tag_key, value = local.name }
    launch_template_id  = ""
    node_role_name      = "${local.global_name}-node"
    vpc_id              = aws_vpc.this.id
    private_subnet_ids  = aws_subnet.private[*].id
    security_group_id   = aws_security_group.nodes.id
    alarm_topic_arn     = aws_sns_topic.alarms.arn
    agent_binary_source = local.agent_source
  }
  log_group_name = "/${var.project}/${var.environment}/training"
  # The experiment table (runs, jobs, the lease, the boot's counters): one name, used before
  # the table exists (the node's config and user_data) and by the table itself.
  table_name = "${local.name}-experiments"

  # tap-agent's configuration (format: crates/tap-core/src/agent_config.rs; a test parses this template).
  agent_config = <<-EOT
    [aws]
    region = "${var.aws_region}"

    [metrics]
    namespace = "${local.metric_contract.namespace}"
    environment = "${var.environment}"
    sample_interval_seconds = ${var.agent_sample_interval_seconds}
    publish_interval_seconds = ${var.agent_publish_interval_seconds}
    high_resolution = ${var.high_resolution_metrics}

    [logs]
    group = "${local.log_group_name}"

    [health]
    on_fatal = "${var.gpu_health_action}"

    [idle]
    scale_to_zero = ${var.scale_to_zero_after_idle_minutes > 0}
    minutes = ${max(var.scale_to_zero_after_idle_minutes, 10)}
    below_percent = ${var.idle_gpu_utilization_percent}

    [jobs]
    controller = true
    table = "${local.table_name}"
    log_group = "${local.log_group_name}"
  EOT

  cloudwatch_agent_config = jsonencode({
    agent = { metrics_collection_interval = 60, run_as_user = "cwagent" }
    metrics = {
      namespace         = local.host_metric_namespace
      append_dimensions = { InstanceId = "$${aws:InstanceId}" }
      metrics_collected = {
        cpu  = { measurement = ["usage_active"], totcpu = true }
        mem  = { measurement = ["used_percent"] }
        disk = { measurement = ["used_percent"], resources = ["/"] }
      }
    }
    logs = {
      logs_collected = {
        files = {
          collect_list = [for p in var.training_log_paths : {
            file_path       = p
            log_group_name  = local.log_group_name
            log_stream_name = "{instance_id}"
          }]
        }
      }
    }
  })

  # What a new node needs to know, read by `tap-agent bootstrap` (tap_core::boot::BootSettings;
  # a tap-core test holds the keys together) from the artifacts bucket (aws_s3_object.node_boot).
  node_boot_key = "tap/node/boot.json"
  node_boot = {
    version                 = 1
    region                  = var.aws_region
    table                   = local.table_name
    ami_id                  = local.ami_id
    max_driver_failures     = var.max_driver_failures
    volta_driver_package    = var.volta_driver_package
    cloudwatch_agent_url    = "https://amazoncloudwatch-agent-${var.aws_region}.s3.${var.aws_region}.amazonaws.com/ubuntu/amd64/latest/amazon-cloudwatch-agent.deb"
    cloudwatch_agent_config = local.cloudwatch_agent_config
    agent_config            = local.agent_config
    cli_source              = local.cli_source
    tap_config              = local.node_tap_config
  }

  # Only what must happen before tap-agent exists: fetch it (retried for ten minutes, as the
  # network of a new stack may still be settling) and run `tap-agent bootstrap`, which does the
  # rest (crates/tap-agent/src/bootstrap.rs). scripts/test-boot.sh runs this very script
  # (rendered by terraform test) as root in a sandbox, on every path. A test bounds it under 2 KB.
  user_data = <<-EOT
    #!/bin/bash
    # tap node boot. Failures are reported, never hidden: /var/lib/tap/bootstrap-failed, the console, the journal.
    set -uo pipefail
    exec > >(tee -a /var/log/tap-bootstrap.log | logger -t tap-bootstrap) 2>&1
    S=/var/lib/tap A=/usr/local/bin/tap-agent
    mkdir -p /etc/tap $S && rm -f $S/bootstrap-failed
    for i in $(seq 60); do
      case '${local.agent_source}' in
        s3://*) aws s3 cp --only-show-errors '${local.agent_source}' /tmp/tap-agent ;;
        *) curl -fsS --connect-timeout 10 -o /tmp/tap-agent '${local.agent_source}' ;;
      esac && install -m 0755 /tmp/tap-agent $A && break
      [ $i = 60 ] || sleep 10
    done
    if [ ! -x $A ]; then
      echo "TAP BOOTSTRAP FAILED: tap-agent download" | tee /dev/console
      printf 'tap-agent download\ntap-agent service\n' >> $S/bootstrap-failed
      exit 1
    fi
    exec $A bootstrap --settings 's3://${local.buckets.model_artifacts}/${local.node_boot_key}' --region ${var.aws_region}
  EOT
}

################################################################################
# Data
################################################################################

# No `state` filter on purpose: a zone that is impaired for a while must not shift the list
# and replace subnets. Pin the zones with var.availability_zones for full determinism.
data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:Zone identity is pinned by var.availability_zones (a zone-name filter); unset, the first three zones in name order are used and new zones sort after them.
  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }

  dynamic "filter" {
    for_each = length(var.availability_zones) > 0 ? [var.availability_zones] : []
    content {
      name   = "zone-name"
      values = filter.value
    }
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) >= 3
      error_message = "Need three AZs: the region has fewer than three default AZs, or var.availability_zones names zones that do not exist there."
    }
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_ssm_parameter" "dlami" {
  count = var.custom_ami_id == null ? 1 : 0
  name  = var.ami_ssm_parameter
}

# Reads the chosen image so the root volume mapping uses its real root device name.
# No owners filter: the id is already the user's (or AWS's) choice, and images shared from
# another account must resolve too.
data "aws_ami" "selected" {
  include_deprecated = true
  filter {
    name   = "image-id"
    values = [local.ami_id]
  }
}

################################################################################
# Network
################################################################################

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = local.name })
}

# The default security group of the VPC allows nothing.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${local.name}-default-deny" })
}

resource "aws_subnet" "private" {
  count                   = 3
  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, count.index)
  map_public_ip_on_launch = false
  tags                    = merge(local.tags, { Name = "${local.name}-private-${local.azs[count.index]}", Tier = "private" })
}

# Public subnets exist only to hold NAT gateways; nothing else is launched there.
resource "aws_subnet" "public" {
  count                   = local.nat_gateway_count
  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 8, 240 + count.index)
  map_public_ip_on_launch = false
  tags                    = merge(local.tags, { Name = "${local.name}-public-${local.azs[count.index]}", Tier = "public" })
}

resource "aws_internet_gateway" "this" {
  count  = local.nat_gateway_count > 0 ? 1 : 0
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = local.name })
}

resource "aws_route_table" "public" {
  count  = local.nat_gateway_count > 0 ? 1 : 0
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${local.name}-public" })
}

resource "aws_route" "public_internet" {
  count                  = local.nat_gateway_count > 0 ? 1 : 0
  route_table_id         = aws_route_table.public[0].id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this[0].id
}

resource "aws_route_table_association" "public" {
  count          = local.nat_gateway_count
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public[0].id
}

resource "aws_eip" "nat" {
  count  = local.nat_gateway_count
  domain = "vpc"
  tags   = merge(local.tags, { Name = "${local.name}-nat-${local.azs[count.index]}" })
}

resource "aws_nat_gateway" "this" {
  count         = local.nat_gateway_count
  allocation_id = aws_eip.nat[count.index].id
  subnet_id     = aws_subnet.public[count.index].id
  tags          = merge(local.tags, { Name = "${local.name}-${local.azs[count.index]}" })
  depends_on    = [aws_internet_gateway.this]
}

# One route table per private subnet, so per_az mode keeps each AZ's egress in its own AZ.
resource "aws_route_table" "private" {
  count  = 3
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${local.name}-private-${local.azs[count.index]}" })
}

resource "aws_route" "private_nat" {
  count                  = local.nat_gateway_count > 0 ? 3 : 0
  route_table_id         = aws_route_table.private[count.index].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[var.nat_gateway_mode == "per_az" ? count.index : 0].id
}

resource "aws_route_table_association" "private" {
  count          = 3
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

# Gateway endpoints are free and keep S3/DynamoDB traffic (datasets, checkpoints) off the NAT.
resource "aws_vpc_endpoint" "gateway" {
  for_each          = toset(["s3", "dynamodb"])
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${var.aws_region}.${each.key}"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = aws_route_table.private[*].id
  tags              = merge(local.tags, { Name = "${local.name}-${each.key}" })
}

resource "aws_vpc_endpoint" "interface" {
  for_each            = local.interface_endpoints
  vpc_id              = aws_vpc.this.id
  service_name        = "com.amazonaws.${var.aws_region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints[0].id]
  tags                = merge(local.tags, { Name = "${local.name}-${each.key}" })
}

resource "aws_flow_log" "this" {
  count           = var.enable_flow_logs ? 1 : 0
  vpc_id          = aws_vpc.this.id
  traffic_type    = "ALL"
  log_destination = aws_cloudwatch_log_group.flow[0].arn
  iam_role_arn    = aws_iam_role.flow_logs[0].arn
  tags            = merge(local.tags, { Name = local.name })
}

################################################################################
# Security groups
################################################################################

resource "aws_security_group" "nodes" {
  name        = "${local.name}-nodes"
  description = "tap training nodes: all traffic between nodes (NCCL), no ingress from outside"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.name}-nodes" })
}

resource "aws_vpc_security_group_ingress_rule" "nodes_self" {
  security_group_id            = aws_security_group.nodes.id
  description                  = "All traffic from other training nodes (NCCL, torchrun rendezvous)"
  ip_protocol                  = "-1"
  referenced_security_group_id = aws_security_group.nodes.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "nodes_self" {
  security_group_id            = aws_security_group.nodes.id
  description                  = "All traffic to other training nodes (NCCL, torchrun rendezvous)"
  ip_protocol                  = "-1"
  referenced_security_group_id = aws_security_group.nodes.id
  tags                         = local.tags
}

# Internet egress only exists where a NAT gateway can carry it: HTTPS for AWS APIs, model and
# dataset hubs and pip; HTTP for the Ubuntu apt mirrors (driver install at boot).
#trivy:ignore:AVD-AWS-0104 Training nodes need the internet (pip, apt mirrors, dataset hubs) through the NAT gateway; there is no ingress.
resource "aws_vpc_security_group_egress_rule" "nodes_internet" {
  for_each          = local.nat_gateway_count > 0 ? { https = 443, http = 80 } : {}
  security_group_id = aws_security_group.nodes.id
  description       = "Outbound ${upper(each.key)} through the NAT gateway"
  ip_protocol       = "tcp"
  from_port         = each.value
  to_port           = each.value
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

# S3 and DynamoDB through the gateway endpoints (their AWS-managed prefix lists), in every mode.
resource "aws_vpc_security_group_egress_rule" "nodes_gateway_endpoints" {
  for_each          = aws_vpc_endpoint.gateway
  security_group_id = aws_security_group.nodes.id
  description       = "HTTPS to ${each.key} through its gateway endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = each.value.prefix_list_id
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "nodes_interface_endpoints" {
  count                        = length(local.interface_endpoints) > 0 ? 1 : 0
  security_group_id            = aws_security_group.nodes.id
  description                  = "HTTPS to the interface endpoints (SSM, Logs, CloudWatch)"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.endpoints[0].id
  tags                         = local.tags
}

resource "aws_security_group" "endpoints" {
  count       = length(local.interface_endpoints) > 0 ? 1 : 0
  name        = "${local.name}-endpoints"
  description = "Interface VPC endpoints: HTTPS from the training nodes only"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.name}-endpoints" })
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_https" {
  count                        = length(local.interface_endpoints) > 0 ? 1 : 0
  security_group_id            = aws_security_group.endpoints[0].id
  description                  = "HTTPS from training nodes"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.nodes.id
  tags                         = local.tags
}

################################################################################
# Storage: training data and model artifacts
################################################################################

#trivy:ignore:AVD-AWS-0089 Access logging needs a separate log bucket; it is enabled when var.s3_access_log_bucket is set.
resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_144:Cross-region replication doubles storage cost; data is re-creatable and checkpoints are versioned. A platform choice, not a default.
  #checkov:skip=CKV2_AWS_62:No consumer of S3 event notifications exists in this stack.
  #checkov:skip=CKV_AWS_145:SSE-S3 is the default by design; a customer-managed KMS key is applied when var.kms_key_arn is set.
  #checkov:skip=CKV_AWS_18:Access logging needs a separate log bucket; enabled when var.s3_access_log_bucket is set.
  #checkov:skip=CKV2_AWS_6:Public access block is aws_s3_bucket_public_access_block.this (for_each over both buckets; checkov links only one instance, terraform test asserts both).
  #checkov:skip=CKV_AWS_21:Versioning is aws_s3_bucket_versioning.this (for_each over both buckets; checkov links only one instance, terraform test asserts both).
  #checkov:skip=CKV2_AWS_61:Lifecycle is aws_s3_bucket_lifecycle_configuration.this (for_each over both buckets; checkov links only one instance, terraform test asserts both).
  for_each = local.buckets
  bucket   = each.value
  tags     = merge(local.tags, { Name = each.value, Purpose = each.key })
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each                = aws_s3_bucket.this
  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = aws_s3_bucket.this
  bucket   = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = aws_s3_bucket.this
  bucket   = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = aws_s3_bucket.this
  bucket   = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_logging" "this" {
  for_each      = var.s3_access_log_bucket == null ? {} : aws_s3_bucket.this
  bucket        = each.value.id
  target_bucket = var.s3_access_log_bucket
  target_prefix = "s3-access/${each.value.id}/"
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  for_each = aws_s3_bucket.this
  bucket   = each.value.id

  rule {
    id     = "archive-and-expire"
    status = "Enabled"
    filter {}

    transition {
      days          = var.archive_after_days
      storage_class = var.archive_storage_class
    }
    noncurrent_version_transition {
      noncurrent_days = var.noncurrent_archive_after_days
      storage_class   = var.archive_storage_class
    }
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_expiration_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }

  lifecycle {
    precondition {
      condition     = var.noncurrent_expiration_days > var.noncurrent_archive_after_days
      error_message = "noncurrent_expiration_days must be greater than noncurrent_archive_after_days."
    }
  }
  depends_on = [aws_s3_bucket_versioning.this]
}

data "aws_iam_policy_document" "bucket" {
  for_each = aws_s3_bucket.this

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [each.value.arn, "${each.value.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "DenyOutdatedTls"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [each.value.arn, "${each.value.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  for_each   = aws_s3_bucket.this
  bucket     = each.value.id
  policy     = data.aws_iam_policy_document.bucket[each.key].json
  depends_on = [aws_s3_bucket_public_access_block.this]
}

# Optional: upload a locally built tap-agent so one `terraform apply` deploys it.
resource "aws_s3_object" "cli" {
  count       = var.cli_binary_path == null ? 0 : 1
  bucket      = aws_s3_bucket.this["model_artifacts"].bucket
  key         = local.cli_s3_key
  source      = var.cli_binary_path
  source_hash = filemd5(var.cli_binary_path)
  kms_key_id  = var.kms_key_arn
  tags        = local.tags
}

resource "aws_s3_object" "agent" {
  count       = var.agent_binary_path == null ? 0 : 1
  bucket      = aws_s3_bucket.this["model_artifacts"].bucket
  key         = local.agent_s3_key
  source      = var.agent_binary_path
  source_hash = filemd5(var.agent_binary_path)
  kms_key_id  = var.kms_key_arn
  tags        = local.tags
}

# What a new node needs to know (local.node_boot), read by `tap-agent bootstrap`.
resource "aws_s3_object" "node_boot" {
  bucket         = aws_s3_bucket.this["model_artifacts"].bucket
  key            = local.node_boot_key
  content_base64 = base64encode(jsonencode(local.node_boot))
  content_type   = "application/json"
  kms_key_id     = var.kms_key_arn
  tags           = local.tags
}

################################################################################
# Experiment tracking
################################################################################

resource "aws_dynamodb_table" "experiments" {
  name                        = local.table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "experiment_id"
  range_key                   = "run_id"
  deletion_protection_enabled = var.dynamodb_deletion_protection

  attribute {
    name = "experiment_id"
    type = "S"
  }
  attribute {
    name = "run_id"
    type = "S"
  }
  attribute {
    name = "started_ms"
    type = "N"
  }

  # Runs of an experiment by start time, without the metric chunks that share their
  # partition: only run items carry started_ms, so the index is sparse and `tap runs list`
  # reads run records alone (a run with 10 chunks of metrics costs one item here, not 11).
  global_secondary_index {
    name            = "runs_by_start"
    hash_key        = "experiment_id"
    range_key       = "started_ms"
    projection_type = "ALL"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }

  tags = merge(local.tags, { Name = local.table_name })
}

################################################################################
# Hyperparameters
################################################################################

resource "aws_ssm_parameter" "hparams" {
  #checkov:skip=CKV_AWS_337:SecureString uses the AWS-managed aws/ssm key unless var.kms_key_arn names a customer-managed key.
  for_each    = var.hparams
  name        = "${var.hparam_prefix}/${each.key}"
  description = "tap hyperparameter ${each.key} (seeded by Terraform, managed with `tap params set`)"
  type        = "SecureString"
  value       = each.value
  key_id      = var.kms_key_arn
  tags        = local.tags

  lifecycle {
    ignore_changes = [value]
  }
}

################################################################################
# IAM: node role and instance profile
################################################################################

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    sid     = "Ec2AssumeRole"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name               = "${local.global_name}-node"
  description        = "tap GPU training nodes"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
  tags               = local.tags
}

resource "aws_iam_instance_profile" "node" {
  name = "${local.global_name}-node"
  role = aws_iam_role.node.name
  tags = local.tags
}

# Lets SSM Run Command reach the nodes (`tap fleet` launches jobs through it).
resource "aws_iam_role_policy_attachment" "ssm_core" {
  role       = aws_iam_role.node.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

locals {
  arn_prefix     = "arn:${data.aws_partition.current.partition}"
  account_id     = data.aws_caller_identity.current.account_id
  log_group_arn  = aws_cloudwatch_log_group.training.arn
  hparam_arn     = "${local.arn_prefix}:ssm:${var.aws_region}:${local.account_id}:parameter${var.hparam_prefix}"
  fleet_tag_key  = "TapFleet"
  bucket_arns    = [for b in aws_s3_bucket.this : b.arn]
  object_arns    = [for b in aws_s3_bucket.this : "${b.arn}/*"]
  kms_statements = var.kms_key_arn == null ? [] : [var.kms_key_arn]
}

data "aws_iam_policy_document" "node" {
  #checkov:skip=CKV_AWS_356:The "*" resources are PutMetricData (no resource-level support; conditioned on the namespace), Run Command invocation reads and CancelCommand, and the job controller's EC2 Describe and GetMetricData reads (none has resource-level support).
  #checkov:skip=CKV_AWS_111:See CKV_AWS_356: the only unscoped write, PutMetricData, is conditioned on cloudwatch:namespace.
  statement {
    sid       = "ListBuckets"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketLocation"]
    resources = local.bucket_arns
  }

  statement {
    sid       = "ReadWriteObjects"
    actions   = ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = local.object_arns
  }

  statement {
    sid       = "ExperimentTable"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:ConditionCheckItem", "dynamodb:DescribeTable"]
    resources = [aws_dynamodb_table.experiments.arn, "${aws_dynamodb_table.experiments.arn}/index/runs_by_start"]
  }

  statement {
    sid       = "TrainingLogs"
    actions   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = [local.log_group_arn, "${local.log_group_arn}:log-stream:*"]
  }

  # PutMetricData has no resource-level permissions: "*" is the only valid resource, and the
  # condition limits it to tap's two namespaces.
  statement {
    sid       = "PublishMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [local.metric_contract.namespace, local.host_metric_namespace]
    }
  }

  statement {
    sid       = "ReadHyperparameters"
    actions   = ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "ssm:GetParameterHistory"]
    resources = [local.hparam_arn, "${local.hparam_arn}/*"]
  }

  statement {
    sid       = "RunCommandOnFleetInstances"
    actions   = ["ssm:SendCommand"]
    resources = ["${local.arn_prefix}:ec2:${var.aws_region}:${local.account_id}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "ssm:resourceTag/${local.fleet_tag_key}"
      values   = [local.name]
    }
  }

  statement {
    sid       = "RunCommandDocument"
    actions   = ["ssm:SendCommand"]
    resources = ["${local.arn_prefix}:ssm:${var.aws_region}::document/AWS-RunShellScript"]
  }

  # Command invocations have no ARN to scope to: reading results needs "*".
  statement {
    sid       = "ReadCommandResults"
    actions   = ["ssm:GetCommandInvocation", "ssm:ListCommandInvocations"]
    resources = ["*"]
  }

  # The fleet's job controller (tap-agent on the node holding the lease in the experiment
  # table; `tap launch` only submits): its view of the fleet and of each node's heartbeat.
  # EC2's Describe calls and GetMetricData have no resource-level permissions: "*" is the only
  # valid resource, and they only read.
  statement {
    sid       = "JobControllerReads"
    actions   = ["ec2:DescribeFleets", "ec2:DescribeFleetInstances", "ec2:DescribeInstances", "cloudwatch:GetMetricData"]
    resources = ["*"]
  }

  # Cancelling a job's other ranks when one is lost. CancelCommand has no resource-level
  # permissions either; it reaches only commands of this account, and the ranks also stop
  # by themselves when the controller marks their attempt ended in the table.
  statement {
    sid       = "CancelJobCommands"
    actions   = ["ssm:CancelCommand"]
    resources = ["*"]
  }

  dynamic "statement" {
    for_each = local.kms_statements
    content {
      sid       = "UseStackKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "node" {
  name   = "${local.name}-node"
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.node.json
}

# Only with scale_to_zero_after_idle_minutes: the agents may change this one fleet's target
# capacity (they read the fleet and its metrics through JobControllerReads of the node
# policy). A policy of its own, since it names the fleet, which itself waits for the node
# policy.
data "aws_iam_policy_document" "node_idle" {
  count = var.scale_to_zero_after_idle_minutes > 0 ? 1 : 0

  statement {
    sid       = "ScaleThisFleet"
    actions   = ["ec2:ModifyFleet"]
    resources = [aws_ec2_fleet.this.arn]
  }
}

resource "aws_iam_role_policy" "node_idle" {
  count  = var.scale_to_zero_after_idle_minutes > 0 ? 1 : 0
  name   = "${local.name}-node-idle"
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.node_idle[0].json
}

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    sid     = "FlowLogsAssumeRole"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

data "aws_iam_policy_document" "flow_logs" {
  count = var.enable_flow_logs ? 1 : 0
  statement {
    sid       = "WriteFlowLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = [aws_cloudwatch_log_group.flow[0].arn, "${aws_cloudwatch_log_group.flow[0].arn}:log-stream:*"]
  }
}

resource "aws_iam_role" "flow_logs" {
  count              = var.enable_flow_logs ? 1 : 0
  name               = "${local.global_name}-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "flow_logs" {
  count  = var.enable_flow_logs ? 1 : 0
  name   = "${local.name}-flow-logs"
  role   = aws_iam_role.flow_logs[0].id
  policy = data.aws_iam_policy_document.flow_logs[0].json
}

################################################################################
# Monitoring: logs, alarms, dashboard
################################################################################

resource "aws_cloudwatch_log_group" "training" {
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days (default 90); a year of training logs is a cost the platform team opts into.
  #checkov:skip=CKV_AWS_158:Encrypted with CloudWatch's own key by default; var.kms_key_arn applies a customer-managed key.
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = local.tags
}

resource "aws_cloudwatch_log_group" "flow" {
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days, chosen by the platform team.
  #checkov:skip=CKV_AWS_158:Encrypted with CloudWatch's own key by default; var.kms_key_arn applies a customer-managed key.
  count             = var.enable_flow_logs ? 1 : 0
  name              = "/${var.project}/${var.environment}/vpc-flow-logs"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = local.tags
}

resource "aws_sns_topic" "alarms" {
  #checkov:skip=CKV_AWS_26:CloudWatch alarms cannot publish to a topic encrypted with the AWS-managed aws/sns key; var.kms_key_arn (a CMK whose policy admits cloudwatch.amazonaws.com) encrypts it.
  name              = "${local.name}-alarms"
  kms_master_key_id = var.kms_key_arn
  tags              = local.tags
}

resource "aws_sns_topic_subscription" "email" {
  count     = var.alarm_email == null ? 0 : 1
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

locals {
  # Every alarm watches a metric of the contract on the fleet dimension set, which the agent
  # publishes (one datapoint per instance, so CloudWatch's statistics span the whole fleet).
  fleet_dimensions = { for d in local.metric_contract.dimension_sets.fleet : d => local.dimension_values[d] }
  # Data arrives up to one publish interval late: wait for two publishes before "missing".
  heartbeat_periods = max(2, ceil(2 * var.agent_publish_interval_seconds / 300))
  # How long a node may take from launch to its first heartbeat: the driver install with its
  # one reboot, the CloudWatch agent and the binaries (downloads retry for up to 10 minutes).
  node_boot_grace_seconds = 1800
  # `pages`: whether the alarm notifies the topic itself. The heartbeat alarm pages through
  # the composite alarm below, which stays quiet while the fleet is scaled to zero on purpose.
  alarms = {
    low-gpu-utilization = {
      metric      = "gpu_utilization"
      description = "Fleet GPU utilization below ${var.low_gpu_utilization_percent}% for ${var.low_gpu_utilization_minutes} minutes: idle spot GPUs cost money."
      statistic   = "Average"
      period      = 300
      periods     = var.low_gpu_utilization_minutes / 5
      comparison  = "LessThanThreshold"
      threshold   = var.low_gpu_utilization_percent
      missing     = "notBreaching"
      pages       = true
    }
    no-gpu-metrics = {
      metric      = "heartbeat"
      description = "No tap-agent heartbeat from the fleet for ${local.heartbeat_periods * 5} minutes: agents are down or cannot reach CloudWatch."
      statistic   = "SampleCount"
      period      = 300
      periods     = local.heartbeat_periods
      comparison  = "LessThanThreshold"
      threshold   = 1
      missing     = "breaching"
      pages       = false
    }
    high-gpu-temperature = {
      metric      = "temperature"
      description = "A GPU of the fleet above ${var.gpu_temperature_celsius} C for 10 minutes."
      statistic   = "Maximum"
      period      = 300
      periods     = 2
      comparison  = "GreaterThanThreshold"
      threshold   = var.gpu_temperature_celsius
      missing     = "notBreaching"
      pages       = true
    }
    gpu-unhealthy = {
      metric      = "unhealthy"
      description = "tap-agent found a fatal GPU fault (XID, uncorrected ECC, lost GPU) on a node of the fleet."
      statistic   = "Maximum"
      period      = max(60, var.agent_publish_interval_seconds) # one datapoint per period, or the alarm flaps
      periods     = 1
      comparison  = "GreaterThanOrEqualToThreshold"
      threshold   = 1
      missing     = "notBreaching"
      pages       = true
    }
    # The fleet's intent, published by whoever sets its capacity: 1 by the idle rule and by
    # `tap fleet scale 0` before they empty the fleet, 0 by `tap fleet scale N` and by every
    # agent when it starts. "ignore" keeps the last state through the silence that follows, so
    # this alarm stays in ALARM exactly while the fleet is meant to be empty.
    fleet-scaled-to-zero = {
      metric      = "fleet_scaled_to_zero"
      description = "The fleet was scaled to zero on purpose (idle rule or tap fleet scale 0): missing heartbeats are expected and do not page."
      statistic   = "Maximum"
      period      = 60
      periods     = 1
      comparison  = "GreaterThanOrEqualToThreshold"
      threshold   = 1
      missing     = "ignore"
      pages       = false
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "this" {
  for_each            = local.alarms
  alarm_name          = "${local.name}-${each.key}"
  alarm_description   = each.value.description
  namespace           = local.metric_contract.namespace
  metric_name         = local.metric_contract.metrics[each.value.metric].name
  dimensions          = local.fleet_dimensions
  statistic           = each.value.statistic
  period              = each.value.period
  evaluation_periods  = each.value.periods
  comparison_operator = each.value.comparison
  threshold           = each.value.threshold
  treat_missing_data  = each.value.missing
  alarm_actions       = each.value.pages ? [aws_sns_topic.alarms.arn] : []
  ok_actions          = each.value.pages ? [aws_sns_topic.alarms.arn] : []
  tags                = local.tags
}

# Pages for missing heartbeats unless the fleet is empty on purpose. While fleet-scaled-to-zero
# is in ALARM the actions are suppressed; once it leaves ALARM (the fleet is scaled up) they
# stay suppressed for the boot grace, after which a fleet that still sends no heartbeat pages.
# A fleet that dies while meant to run pages as before. Terraform's own target 0 turns the
# actions off.
resource "aws_cloudwatch_composite_alarm" "fleet_not_reporting" {
  alarm_name        = "${local.name}-fleet-not-reporting"
  alarm_description = "No tap-agent heartbeat from the fleet for ${local.heartbeat_periods * 5} minutes while it should have nodes: agents are down, nodes cannot boot or cannot reach CloudWatch. Quiet while the fleet is scaled to zero on purpose and for ${local.node_boot_grace_seconds / 60} minutes after it is scaled up."
  alarm_rule        = "ALARM(\"${aws_cloudwatch_metric_alarm.this["no-gpu-metrics"].alarm_name}\")"
  actions_enabled   = var.target_capacity > 0
  alarm_actions     = [aws_sns_topic.alarms.arn]
  ok_actions        = [aws_sns_topic.alarms.arn]

  actions_suppressor {
    alarm            = aws_cloudwatch_metric_alarm.this["fleet-scaled-to-zero"].alarm_name
    extension_period = local.node_boot_grace_seconds
    wait_period      = 300
  }

  tags = local.tags
}

locals {
  ns = local.metric_contract.namespace
  m  = { for k, v in local.metric_contract.metrics : k => v.name }
  # Per-GPU and per-instance series are found with SEARCH on the exact dimension sets.
  gpu_search = join(",", concat([local.ns], local.metric_contract.dimension_sets.gpu))
  dashboard_widgets = [
    for i, w in [
      { title = "GPU utilization per GPU (%)", expr = "SEARCH('{${local.gpu_search}} MetricName=\"${local.m.gpu_utilization}\" Environment=\"${var.environment}\"', 'Average', 60)" },
      { title = "GPU memory utilization per GPU (%)", expr = "SEARCH('{${local.gpu_search}} MetricName=\"${local.m.memory_utilization}\" Environment=\"${var.environment}\"', 'Average', 60)" },
      { title = "GPU temperature per GPU (C)", expr = "SEARCH('{${local.gpu_search}} MetricName=\"${local.m.temperature}\" Environment=\"${var.environment}\"', 'Maximum', 60)" },
      { title = "GPU power draw per GPU (W)", expr = "SEARCH('{${local.gpu_search}} MetricName=\"${local.m.power_draw}\" Environment=\"${var.environment}\"', 'Average', 60)" },
      ] : {
      type   = "metric"
      x      = (i % 2) * 12
      y      = floor(i / 2) * 6
      width  = 12
      height = 6
      properties = {
        title   = w.title
        region  = var.aws_region
        view    = "timeSeries"
        metrics = [[{ expression = w.expr, id = "e1", label = "" }]]
      }
    }
  ]
  dashboard_fleet_widget = {
    type   = "metric"
    x      = 0
    y      = 12
    width  = 12
    height = 6
    properties = {
      title  = "Fleet: agents reporting, GPUs visible, unhealthy GPUs"
      region = var.aws_region
      view   = "timeSeries"
      stat   = "Sum"
      period = 60
      metrics = [
        [local.ns, local.m.heartbeat, "Environment", var.environment, { stat = "SampleCount", label = "agents reporting" }],
        [local.ns, local.m.gpus_visible, "Environment", var.environment, { label = "GPUs visible" }],
        [local.ns, local.m.unhealthy, "Environment", var.environment, { stat = "Maximum", label = "unhealthy GPUs" }],
      ]
    }
  }
  dashboard_alarm_widget = {
    type   = "alarm"
    x      = 12
    y      = 12
    width  = 12
    height = 6
    properties = {
      title  = "Alarms"
      alarms = concat([for a in aws_cloudwatch_metric_alarm.this : a.arn], [aws_cloudwatch_composite_alarm.fleet_not_reporting.arn])
    }
  }
}

resource "aws_cloudwatch_dashboard" "gpus" {
  dashboard_name = "${local.global_name}-gpus"
  dashboard_body = jsonencode({ widgets = concat(local.dashboard_widgets, [local.dashboard_fleet_widget, local.dashboard_alarm_widget]) })
}

################################################################################
# Compute: launch template and EC2 Fleet
################################################################################

resource "aws_launch_template" "node" {
  name_prefix                          = "${local.name}-node-"
  description                          = "tap GPU training node"
  image_id                             = local.ami_id
  instance_type                        = var.instance_types[0]
  ebs_optimized                        = true
  instance_initiated_shutdown_behavior = "terminate"
  update_default_version               = true
  user_data                            = base64encode(local.user_data)

  iam_instance_profile {
    arn = aws_iam_instance_profile.node.arn
  }

  #checkov:skip=CKV_AWS_341:Hop limit 2 is required so containers on the node (PyTorch images, the agent's sidecars) can reach IMDSv2.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 2
    instance_metadata_tags      = "enabled"
  }

  block_device_mappings {
    device_name = data.aws_ami.selected.root_device_name
    ebs {
      volume_size           = var.root_volume_size_gb
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.kms_key_arn
      delete_on_termination = true
    }
  }

  network_interfaces {
    device_index                = 0
    associate_public_ip_address = false
    delete_on_termination       = true
    security_groups             = [aws_security_group.nodes.id]
  }

  monitoring {
    enabled = true
  }

  # Not "network-interface": a maintain fleet launches through the AWSServiceRoleForEC2Fleet
  # service-linked role, whose policy may tag instances, spot requests and volumes on launch
  # only; an ENI tag specification makes every launch fail (seen only in the fleet's errors).
  dynamic "tag_specifications" {
    for_each = toset(["instance", "volume", "spot-instances-request"])
    content {
      resource_type = tag_specifications.value
      tags          = merge(local.tags, { Name = "${local.name}-node", (local.fleet_tag_key) = local.name })
    }
  }

  tags = local.tags
}

# The role a maintain fleet launches instances through. AWS creates it only for console users;
# an account's first CreateFleet through the API fails without it. Opt-in, since only one
# stack per account can own it; otherwise the fleet's precondition checks that it exists.
resource "aws_iam_service_linked_role" "ec2_fleet" {
  count            = var.create_ec2_fleet_service_linked_role ? 1 : 0
  aws_service_name = "ec2fleet.amazonaws.com"
  description      = "EC2 Fleet launches and replaces the tap spot nodes (created by ${local.name})"
}

data "aws_iam_roles" "ec2_fleet_service_linked" {
  name_regex  = "^AWSServiceRoleForEC2Fleet$"
  path_prefix = "/aws-service-role/ec2fleet.amazonaws.com/"
}

# Spot only, type maintain: EC2 replaces every interrupted or unhealthy instance. The
# allocation strategy (var.spot_allocation_strategy, default capacity-optimized-prioritized)
# picks among the (type, subnet) pools below the ones with most spare capacity, the home AZ's
# first (local.fleet_overrides): a multi-node job's ranks must share one AZ.
# Capacity rebalancing (launch-before-terminate) launches a replacement as soon as EC2 signals
# elevated interruption risk and terminates the old node rebalance_termination_delay_seconds
# later. Not "launch": the provider always sends TerminationDelay (0 when unset), which AWS
# rejects with "launch" (InvalidParameterCombination; terraform-provider-aws issue #39531), and
# "launch" never terminates the old node, so the fleet would run (and bill) above target.
resource "aws_ec2_fleet" "this" {
  type                                = "maintain"
  replace_unhealthy_instances         = true
  terminate_instances                 = true
  terminate_instances_with_expiration = true
  excess_capacity_termination_policy  = "termination"

  launch_template_config {
    launch_template_specification {
      launch_template_id = aws_launch_template.node.id
      version            = aws_launch_template.node.latest_version
    }

    dynamic "override" {
      for_each = local.fleet_overrides
      content {
        instance_type = override.value.instance_type
        subnet_id     = override.value.subnet_id
        priority      = override.value.priority
      }
    }
  }

  # Only the total: spot_target_capacity and on_demand_target_capacity are ForceNew in the
  # provider (their diff is suppressed only when unset and equal to the old total;
  # internal/service/ec2/ec2_fleet.go), so setting them would replace the fleet (terminating
  # every node, changing its id) on every capacity change. total_target_capacity updates in
  # place through ModifyFleet, which is also all `tap fleet scale` and the idle rule change:
  # after either, the next plan is an in-place update back to var.target_capacity.
  target_capacity_specification {
    default_target_capacity_type = "spot"
    total_target_capacity        = var.target_capacity
  }

  spot_options {
    allocation_strategy            = var.spot_allocation_strategy
    instance_interruption_behavior = "terminate"
    maintenance_strategies {
      capacity_rebalance {
        replacement_strategy = "launch-before-terminate"
        termination_delay    = var.rebalance_termination_delay_seconds
      }
    }
  }

  tags = merge(local.tags, { Name = "${local.name}-fleet" })

  lifecycle {
    precondition {
      condition     = coalesce(local.home_az_index, 0) >= 0
      error_message = "home_availability_zone = \"${var.home_availability_zone}\" is not one of the fleet's AZs (${join(", ", local.azs)}): name one of them, \"\" for the first, or \"none\"."
    }
    precondition {
      condition     = var.create_ec2_fleet_service_linked_role || length(data.aws_iam_roles.ec2_fleet_service_linked.names) > 0
      error_message = "This account has no AWSServiceRoleForEC2Fleet service-linked role, which EC2 Fleet needs before its first CreateFleet: run `aws iam create-service-linked-role --aws-service-name ec2fleet.amazonaws.com` once, or set create_ec2_fleet_service_linked_role = true."
    }
  }

  # Everything a node's first boot reaches for: its route to the internet (NAT), the
  # endpoints, the security group's rules, the node policy and the binaries it downloads.
  # The fleet waits for all of it, so the first nodes of a new stack never boot into a network
  # that is not there yet (user_data runs once). tap-core's stack test checks this list.
  depends_on = [
    aws_iam_role_policy.node,
    aws_iam_role_policy_attachment.ssm_core,
    aws_iam_service_linked_role.ec2_fleet,
    aws_route_table_association.private,
    aws_route.private_nat,
    aws_route.public_internet,
    aws_route_table_association.public,
    aws_nat_gateway.this,
    aws_vpc_endpoint.gateway,
    aws_vpc_endpoint.interface,
    aws_vpc_security_group_egress_rule.nodes_internet,
    aws_vpc_security_group_egress_rule.nodes_gateway_endpoints,
    aws_vpc_security_group_egress_rule.nodes_interface_endpoints,
    aws_vpc_security_group_egress_rule.nodes_self,
    aws_vpc_security_group_ingress_rule.nodes_self,
    aws_vpc_security_group_ingress_rule.endpoints_https,
    aws_s3_bucket_policy.this,
    aws_s3_object.node_boot,
    aws_s3_object.agent,
    aws_s3_object.cli,
    aws_cloudwatch_log_group.training,
  ]
}

################################################################################
# Outputs
################################################################################

output "training_data_bucket_name" {
  description = "S3 bucket for training data."
  value       = aws_s3_bucket.this["training_data"].bucket
}

output "model_artifacts_bucket_name" {
  description = "S3 bucket for checkpoints, models and the tap-agent binary."
  value       = aws_s3_bucket.this["model_artifacts"].bucket
}

output "dynamodb_table_name" {
  description = "DynamoDB table of experiments and runs (experiment_id / run_id)."
  value       = aws_dynamodb_table.experiments.name
}

output "ec2_fleet_id" {
  description = "Id of the EC2 Fleet of spot GPU nodes."
  value       = aws_ec2_fleet.this.id
}

output "iam_role_name" {
  description = "IAM role of the training nodes."
  value       = aws_iam_role.node.name
}

output "aws_region" {
  description = "Region of the stack."
  value       = var.aws_region
}

output "log_group_name" {
  description = "CloudWatch log group of the training logs."
  value       = aws_cloudwatch_log_group.training.name
}

output "hparam_prefix" {
  description = "SSM path of the hyperparameters."
  value       = var.hparam_prefix
}

output "metric_namespace" {
  description = "CloudWatch namespace of the GPU metrics."
  value       = local.metric_contract.namespace
}

output "vpc_id" {
  description = "VPC of the stack."
  value       = aws_vpc.this.id
}

output "home_availability_zone" {
  description = "The AZ the fleet fills first (null: home_availability_zone = \"none\"): a multi-node job runs in one AZ, so its nodes gather here."
  value       = local.home_az
}

output "private_subnet_ids" {
  description = "The three private subnets the fleet launches into."
  value       = aws_subnet.private[*].id
}

output "security_group_id" {
  description = "Security group of the training nodes."
  value       = aws_security_group.nodes.id
}

output "alarm_topic_arn" {
  description = "SNS topic the alarms notify."
  value       = aws_sns_topic.alarms.arn
}

output "tap_config" {
  description = "Everything `tap stack import` needs, in one object (terraform output -json tap_config)."
  value = {
    version             = 1
    stack               = local.name
    environment         = var.environment
    region              = var.aws_region
    training_bucket     = aws_s3_bucket.this["training_data"].bucket
    artifacts_bucket    = aws_s3_bucket.this["model_artifacts"].bucket
    table_name          = aws_dynamodb_table.experiments.name
    log_group           = aws_cloudwatch_log_group.training.name
    hparam_prefix       = var.hparam_prefix
    metric_namespace    = local.metric_contract.namespace
    fleet_id            = aws_ec2_fleet.this.id
    fleet_tag           = { key = local.fleet_tag_key, value = local.name }
    launch_template_id  = aws_launch_template.node.id
    node_role_name      = aws_iam_role.node.name
    vpc_id              = aws_vpc.this.id
    private_subnet_ids  = aws_subnet.private[*].id
    security_group_id   = aws_security_group.nodes.id
    alarm_topic_arn     = aws_sns_topic.alarms.arn
    agent_binary_source = local.agent_source
  }
}
