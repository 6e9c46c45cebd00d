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
