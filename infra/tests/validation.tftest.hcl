# Bad variable values are rejected at plan time with a message naming the problem,
# instead of failing late inside AWS.
mock_provider "aws" {
  source = "./tests"
}

run "nat_mode_unknown" {
  command = plan
  variables { nat_gateway_mode = "two" }
  expect_failures = [var.nat_gateway_mode]
}

run "instance_type_without_nvidia_gpu" {
  command = plan
  variables { instance_types = ["p3.2xlarge", "m5.large"] }
  expect_failures = [var.instance_types]
}

run "instance_types_empty" {
  command = plan
  variables { instance_types = [] }
  expect_failures = [var.instance_types]
}

run "environment_not_dns_safe" {
  command = plan
  variables { environment = "Prod_1" }
  expect_failures = [var.environment]
}

run "region_malformed" {
  command = plan
  variables { aws_region = "useast1" }
  expect_failures = [var.aws_region]
}

run "bucket_suffix_uppercase" {
  command = plan
  variables { bucket_suffix = "-ACME" }
  expect_failures = [var.bucket_suffix]
}

run "vpc_cidr_too_large" {
  command = plan
  variables { vpc_cidr = "10.0.0.0/8" }
  expect_failures = [var.vpc_cidr]
}

run "vpc_cidr_not_a_cidr" {
  command = plan
  variables { vpc_cidr = "10.0.0.300/16" }
  expect_failures = [var.vpc_cidr]
}

run "two_azs" {
  command = plan
  variables { availability_zones = ["us-east-1a", "us-east-1b"] }
  expect_failures = [var.availability_zones]
}

run "duplicate_azs" {
  command = plan
  variables { availability_zones = ["us-east-1a", "us-east-1a", "us-east-1b"] }
  expect_failures = [var.availability_zones]
}

run "target_capacity_fractional" {
  command = plan
  variables { target_capacity = 1.5 }
  expect_failures = [var.target_capacity]
}

run "target_capacity_negative" {
  command = plan
  variables { target_capacity = -1 }
  expect_failures = [var.target_capacity]
}

run "allocation_strategy_unknown" {
  command = plan
  variables { spot_allocation_strategy = "cheapest" }
  expect_failures = [var.spot_allocation_strategy]
}

run "home_az_malformed" {
  command = plan
  variables { home_availability_zone = "home" }
  expect_failures = [var.home_availability_zone]
}

run "home_az_needs_the_prioritized_strategy" {
  command = plan
  variables { spot_allocation_strategy = "price-capacity-optimized" }
  expect_failures = [var.home_availability_zone]
}

run "home_az_not_one_of_the_fleets" {
  command = plan
  variables { home_availability_zone = "us-west-2a" }
  expect_failures = [aws_ec2_fleet.this]
}

run "custom_ami_malformed" {
  command = plan
  variables { custom_ami_id = "ami-xyz" }
  expect_failures = [var.custom_ami_id]
}

run "ami_parameter_not_public" {
  command = plan
  variables { ami_ssm_parameter = "/my/ami" }
  expect_failures = [var.ami_ssm_parameter]
}

run "root_volume_too_small" {
  command = plan
  variables { root_volume_size_gb = 20 }
  expect_failures = [var.root_volume_size_gb]
}

run "kms_key_not_an_arn" {
  command = plan
  variables { kms_key_arn = "alias/my-key" }
  expect_failures = [var.kms_key_arn]
}

run "archive_class_unknown" {
  command = plan
  variables { archive_storage_class = "STANDARD_IA" }
  expect_failures = [var.archive_storage_class]
}

run "archive_days_zero" {
  command = plan
  variables { archive_after_days = 0 }
  expect_failures = [var.archive_after_days]
}

run "noncurrent_expiry_before_archive" {
  command = plan
  variables {
    noncurrent_archive_after_days = 60
    noncurrent_expiration_days    = 30
  }
  expect_failures = [aws_s3_bucket_lifecycle_configuration.this]
}

run "hparams_missing_epochs" {
  command = plan
  variables { hparams = { learning_rate = "0.1", batch_size = "8" } }
  expect_failures = [var.hparams]
}

run "hparam_name_with_slash" {
  command = plan
  variables { hparams = { learning_rate = "0.1", batch_size = "8", epochs = "1", "a/b" = "x" } }
  expect_failures = [var.hparams]
}

run "hparam_prefix_trailing_slash" {
  command = plan
  variables { hparam_prefix = "/ml/hparams/" }
  expect_failures = [var.hparam_prefix]
}

run "log_retention_not_allowed" {
  command = plan
  variables { log_retention_days = 42 }
  expect_failures = [var.log_retention_days]
}

run "log_path_relative" {
  command = plan
  variables { training_log_paths = ["logs/*.log"] }
  expect_failures = [var.training_log_paths]
}

run "alarm_email_malformed" {
  command = plan
  variables { alarm_email = "oncall" }
  expect_failures = [var.alarm_email]
}

run "low_utilization_minutes_not_multiple_of_5" {
  command = plan
  variables { low_gpu_utilization_minutes = 12 }
  expect_failures = [var.low_gpu_utilization_minutes]
}

run "utilization_threshold_out_of_range" {
  command = plan
  variables { low_gpu_utilization_percent = 150 }
  expect_failures = [var.low_gpu_utilization_percent]
}

run "temperature_out_of_range" {
  command = plan
  variables { gpu_temperature_celsius = 200 }
  expect_failures = [var.gpu_temperature_celsius]
}

run "agent_url_plain_http" {
  command = plan
  variables { agent_binary_url = "http://example.com/tap-agent" }
  expect_failures = [var.agent_binary_url]
}

run "agent_prefix_leading_slash" {
  command = plan
  variables { agent_s3_prefix = "/tap/bin" }
  expect_failures = [var.agent_s3_prefix]
}

run "publish_interval_unsupported" {
  command = plan
  variables { agent_publish_interval_seconds = 1200 }
  expect_failures = [var.agent_publish_interval_seconds]
}

run "sample_interval_zero" {
  command = plan
  variables { agent_sample_interval_seconds = 0 }
  expect_failures = [var.agent_sample_interval_seconds]
}

run "driver_package_injection" {
  command = plan
  variables { volta_driver_package = "nvidia-driver-580; rm -rf /" }
  expect_failures = [var.volta_driver_package]
}

run "gpu_health_action_unknown" {
  command = plan
  variables { gpu_health_action = "reboot" }
  expect_failures = [var.gpu_health_action]
}

run "scale_to_zero_minutes_too_short" {
  command = plan
  variables { scale_to_zero_after_idle_minutes = 5 }
  expect_failures = [var.scale_to_zero_after_idle_minutes]
}

run "scale_to_zero_minutes_fractional" {
  command = plan
  variables { scale_to_zero_after_idle_minutes = 30.5 }
  expect_failures = [var.scale_to_zero_after_idle_minutes]
}

run "idle_percent_out_of_range" {
  command = plan
  variables { idle_gpu_utilization_percent = 0 }
  expect_failures = [var.idle_gpu_utilization_percent]
}

# Values that passed validation but would have failed in AWS (issue: the stack on a real account).
run "vpc_cidr_nat_subnets_below_28" {
  command = plan
  variables { vpc_cidr = "10.0.0.0/21" }
  expect_failures = [var.vpc_cidr]
}

run "vpc_cidr_smallest_allowed" {
  command = plan
  variables { vpc_cidr = "10.0.0.0/20" }

  assert {
    condition     = aws_subnet.public[0].cidr_block == "10.0.15.0/28" && aws_subnet.private[2].cidr_block == "10.0.2.0/24"
    error_message = "A /20 VPC still gets /28 NAT subnets and /24 private subnets."
  }
}

run "tag_key_with_slash" {
  command = plan
  variables { tags = { "team/owner" = "ml" } }
  expect_failures = [var.tags]
}

run "tag_key_with_space" {
  command = plan
  variables { tags = { "cost center" = "42" } }
  expect_failures = [var.tags]
}

run "tag_key_reserved_aws_prefix" {
  command = plan
  variables { tags = { "aws:owner" = "ml" } }
  expect_failures = [var.tags]
}

run "tag_keys_imds_allows" {
  command = plan
  variables { tags = { "cost-center" = "42", "team:owner" = "ml@example.com" } }

  assert {
    condition     = aws_launch_template.node.tag_specifications[0].tags["cost-center"] == "42"
    error_message = "Tag keys that instance metadata tags allow are accepted."
  }
}

run "environment_ending_with_hyphen" {
  command = plan
  variables {
    environment   = "dev-"
    bucket_suffix = ""
  }
  expect_failures = [var.environment]
}

run "project_ending_with_hyphen" {
  command = plan
  variables { project = "tap-" }
  expect_failures = [var.project]
}

run "hparam_prefix_reserved_aws" {
  command = plan
  variables { hparam_prefix = "/aws/ml" }
  expect_failures = [var.hparam_prefix]
}

run "hparam_prefix_reserved_ssm_any_case" {
  command = plan
  variables { hparam_prefix = "/SSM/hparams" }
  expect_failures = [var.hparam_prefix]
}

run "rebalance_delay_too_short" {
  command = plan
  variables { rebalance_termination_delay_seconds = 0 }
  expect_failures = [var.rebalance_termination_delay_seconds]
}

run "rebalance_delay_too_long" {
  command = plan
  variables { rebalance_termination_delay_seconds = 7201 }
  expect_failures = [var.rebalance_termination_delay_seconds]
}

run "driver_failures_cap_zero" {
  command = plan
  variables { max_driver_failures = 0 }
  expect_failures = [var.max_driver_failures]
}

# No AWSServiceRoleForEC2Fleet in the account: the plan stops and names the fix.
run "fleet_service_linked_role_missing" {
  command = plan
  override_data {
    target = data.aws_iam_roles.ec2_fleet_service_linked
    values = { names = [] }
  }
  expect_failures = [aws_ec2_fleet.this]
}

run "fleet_service_linked_role_created" {
  command = plan
  variables { create_ec2_fleet_service_linked_role = true }
  override_data {
    target = data.aws_iam_roles.ec2_fleet_service_linked
    values = { names = [] }
  }

  assert {
    condition     = aws_iam_service_linked_role.ec2_fleet[0].aws_service_name == "ec2fleet.amazonaws.com"
    error_message = "create_ec2_fleet_service_linked_role creates EC2 Fleet's service-linked role."
  }
}

# Two regions of one account: bucket, IAM and dashboard names must not collide.
run "names_are_region_safe" {
  command = plan
  variables { aws_region = "eu-west-1" }

  assert {
    condition     = aws_iam_role.node.name == "tap-dev-eu-west-1-node" && aws_iam_instance_profile.node.name == "tap-dev-eu-west-1-node" && aws_iam_role.flow_logs[0].name == "tap-dev-eu-west-1-flow-logs" && aws_cloudwatch_dashboard.gpus.dashboard_name == "tap-dev-eu-west-1-gpus"
    error_message = "Account-global names (IAM, dashboards) carry the region."
  }
  assert {
    condition     = aws_s3_bucket.this["training_data"].bucket == "ml-training-data-dev-123456789012-eu-west-1"
    error_message = "Default bucket names carry the account id and the region."
  }
}

run "bucket_suffix_empty_keeps_plain_names" {
  command = plan
  variables { bucket_suffix = "" }

  assert {
    condition     = aws_s3_bucket.this["model_artifacts"].bucket == "ml-model-artifacts-dev"
    error_message = "bucket_suffix = \"\" gives the plain names."
  }
}

run "longest_names_fit_s3" {
  command = plan
  variables {
    environment = "abcdefghijklmnop"
    aws_region  = "ap-southeast-2"
  }

  assert {
    condition     = length(aws_s3_bucket.this["model_artifacts"].bucket) <= 63
    error_message = "The longest default bucket name fits S3's 63 characters."
  }
}
