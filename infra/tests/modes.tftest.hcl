# NAT modes, interface endpoints, the custom-AMI path and the optional pieces.
mock_provider "aws" {
  source = "./tests"
}

run "nat_none" {
  command = apply
  variables {
    nat_gateway_mode = "none"
  }

  assert {
    condition     = length(aws_nat_gateway.this) == 0 && length(aws_eip.nat) == 0 && length(aws_internet_gateway.this) == 0 && length(aws_subnet.public) == 0
    error_message = "none: no NAT gateway, EIP, internet gateway or public subnet."
  }
  assert {
    condition     = length(aws_route.private_nat) == 0
    error_message = "none: private subnets have no default route."
  }
  assert {
    condition     = toset(keys(aws_vpc_endpoint.interface)) == toset(["ssm", "ssmmessages", "ec2messages", "logs", "monitoring"])
    error_message = "none: SSM, Logs and CloudWatch stay reachable through interface endpoints."
  }
  assert {
    condition     = alltrue([for e in aws_vpc_endpoint.interface : e.private_dns_enabled && length(e.subnet_ids) == 3 && e.security_group_ids == toset([aws_security_group.endpoints[0].id])])
    error_message = "Interface endpoints: private DNS, all three subnets, endpoint security group."
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.endpoints_https[0].referenced_security_group_id == aws_security_group.nodes.id && aws_vpc_security_group_ingress_rule.endpoints_https[0].from_port == 443
    error_message = "Endpoints accept HTTPS from the nodes only."
  }
  assert {
    condition     = length(aws_vpc_endpoint.gateway) == 2
    error_message = "Gateway endpoints exist in every mode."
  }
  assert {
    condition     = length(aws_vpc_security_group_egress_rule.nodes_internet) == 0
    error_message = "none: no internet egress rule (there is no route to the internet)."
  }
  assert {
    condition     = aws_vpc_security_group_egress_rule.nodes_interface_endpoints[0].referenced_security_group_id == aws_security_group.endpoints[0].id && length(aws_vpc_security_group_egress_rule.nodes_gateway_endpoints) == 2
    error_message = "none: nodes reach the interface and gateway endpoints."
  }
}

run "nat_none_without_endpoints" {
  command = plan
  variables {
    nat_gateway_mode           = "none"
    enable_interface_endpoints = false
  }

  assert {
    condition     = length(aws_vpc_endpoint.interface) == 0 && length(aws_security_group.endpoints) == 0
    error_message = "enable_interface_endpoints = false wins over the mode's default."
  }
}

run "nat_per_az" {
  command = apply
  variables {
    nat_gateway_mode = "per_az"
  }

  assert {
    condition     = length(aws_nat_gateway.this) == 3 && length(aws_eip.nat) == 3 && length(aws_subnet.public) == 3
    error_message = "per_az: three NAT gateways with their EIPs and public subnets."
  }
  assert {
    condition     = length(distinct(aws_subnet.public[*].availability_zone)) == 3
    error_message = "per_az: one NAT gateway in each AZ."
  }
  assert {
    condition     = alltrue([for i in range(3) : aws_route.private_nat[i].nat_gateway_id == aws_nat_gateway.this[i].id && aws_route.private_nat[i].route_table_id == aws_route_table.private[i].id])
    error_message = "per_az: each private subnet routes through the NAT gateway of its own AZ."
  }
  assert {
    condition     = length(aws_vpc_endpoint.interface) == 0
    error_message = "per_az: no interface endpoints unless asked for."
  }
}

run "nat_single_with_endpoints" {
  command = plan
  variables {
    enable_interface_endpoints = true
  }

  assert {
    condition     = length(aws_nat_gateway.this) == 1 && length(aws_vpc_endpoint.interface) == 5
    error_message = "Interface endpoints can be added to any NAT mode."
  }
}

run "custom_ami" {
  command = apply
  variables {
    custom_ami_id = "ami-0fedcba9876543210"
  }

  assert {
    condition     = length(data.aws_ssm_parameter.dlami) == 0
    error_message = "With custom_ami_id the SSM parameter is not read."
  }
  assert {
    condition     = aws_launch_template.node.image_id == "ami-0fedcba9876543210"
    error_message = "The launch template uses custom_ami_id."
  }
}

run "explicit_azs_and_names" {
  command = apply
  variables {
    aws_region         = "eu-west-1"
    environment        = "prod"
    bucket_suffix      = "-acme"
    availability_zones = ["eu-west-1b", "eu-west-1c", "eu-west-1a"]
    target_capacity    = 12
  }

  assert {
    condition     = aws_subnet.private[*].availability_zone == ["eu-west-1b", "eu-west-1c", "eu-west-1a"]
    error_message = "availability_zones overrides the data source."
  }
  assert {
    condition     = aws_vpc_endpoint.gateway["dynamodb"].service_name == "com.amazonaws.eu-west-1.dynamodb"
    error_message = "Endpoints follow the region."
  }
  assert {
    condition     = output.training_data_bucket_name == "ml-training-data-prod-acme" && output.model_artifacts_bucket_name == "ml-model-artifacts-prod-acme"
    error_message = "bucket_suffix is appended to both bucket names."
  }
  assert {
    condition     = aws_ec2_fleet.this.target_capacity_specification[0].total_target_capacity == 12
    error_message = "target_capacity sizes the fleet."
  }
  assert {
    condition     = strcontains(jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).cloudwatch_agent_url, "amazoncloudwatch-agent-eu-west-1.s3.eu-west-1.amazonaws.com")
    error_message = "The CloudWatch agent comes from the stack's region."
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.this["gpu-unhealthy"].dimensions == tomap({ Environment = "prod" })
    error_message = "Alarm dimensions carry the environment."
  }
}

run "kms_and_options" {
  command = apply
  variables {
    kms_key_arn          = "arn:aws:kms:us-east-1:123456789012:key/0b7e4f3c-1d2a-4c5b-9e8f-001122334455"
    alarm_email          = "ml-oncall@example.com"
    agent_binary_path    = "tests/fixtures/tap-agent"
    s3_access_log_bucket = "central-access-logs"
    enable_flow_logs     = false
  }

  assert {
    condition     = alltrue([for e in aws_s3_bucket_server_side_encryption_configuration.this : one(e.rule).apply_server_side_encryption_by_default[0].sse_algorithm == "aws:kms" && one(e.rule).apply_server_side_encryption_by_default[0].kms_master_key_id == var.kms_key_arn && one(e.rule).bucket_key_enabled])
    error_message = "With kms_key_arn the buckets use SSE-KMS with a bucket key."
  }
  assert {
    condition     = aws_dynamodb_table.experiments.server_side_encryption[0].kms_key_arn == var.kms_key_arn && aws_cloudwatch_log_group.training.kms_key_id == var.kms_key_arn && aws_sns_topic.alarms.kms_master_key_id == var.kms_key_arn
    error_message = "The key encrypts the table, the log group and the alarm topic."
  }
  assert {
    condition     = alltrue([for p in aws_ssm_parameter.hparams : p.key_id == var.kms_key_arn]) && aws_launch_template.node.block_device_mappings[0].ebs[0].kms_key_id == var.kms_key_arn
    error_message = "The key encrypts the SecureStrings and the root volume."
  }
  assert {
    condition     = one([for s in data.aws_iam_policy_document.node.statement : s if s.sid == "UseStackKey"]).resources == toset([var.kms_key_arn])
    error_message = "Nodes may use the stack's key, and only it."
  }
  assert {
    condition     = aws_sns_topic_subscription.email[0].endpoint == "ml-oncall@example.com" && aws_sns_topic_subscription.email[0].protocol == "email"
    error_message = "alarm_email subscribes to the topic."
  }
  assert {
    condition     = aws_s3_object.agent[0].key == "tap/bin/tap-agent" && aws_s3_object.agent[0].source == "tests/fixtures/tap-agent"
    error_message = "agent_binary_path uploads the binary where user_data fetches it."
  }
  assert {
    condition     = length(aws_s3_bucket_logging.this) == 2 && alltrue([for l in aws_s3_bucket_logging.this : l.target_bucket == "central-access-logs"])
    error_message = "s3_access_log_bucket turns on access logging for both buckets."
  }
  assert {
    condition     = length(aws_flow_log.this) == 0 && length(aws_iam_role.flow_logs) == 0
    error_message = "enable_flow_logs = false removes flow logs and their role."
  }
}

run "agent_from_url" {
  command = plan
  variables {
    agent_binary_url = "https://releases.example.com/tap-agent-1.0.0"
  }

  assert {
    condition     = strcontains(base64decode(aws_launch_template.node.user_data), "curl -fsS --connect-timeout 10 -o /tmp/tap-agent 'https://releases.example.com/tap-agent-1.0.0'") && jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).cli_source == "https://releases.example.com/tap"
    error_message = "agent_binary_url replaces the S3 location."
  }
}

run "slow_publishing_and_empty_fleet" {
  command = plan
  variables {
    agent_publish_interval_seconds = 600
    target_capacity                = 0
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.this["gpu-unhealthy"].period == 600
    error_message = "The unhealthy alarm's period covers one publish interval, so a standing fault keeps it in ALARM."
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.this["no-gpu-metrics"].evaluation_periods == 4 && aws_cloudwatch_metric_alarm.this["no-gpu-metrics"].period == 300
    error_message = "The heartbeat alarm waits two publish intervals before treating data as missing."
  }
  assert {
    condition     = aws_cloudwatch_composite_alarm.fleet_not_reporting.actions_enabled == false && aws_cloudwatch_metric_alarm.this["gpu-unhealthy"].alarm_actions == toset([aws_sns_topic.alarms.arn])
    error_message = "A fleet Terraform sizes to zero does not page for missing heartbeats; other alarms stay armed."
  }
}

run "idle_scale_to_zero_off_by_default" {
  command = apply

  assert {
    condition     = length(aws_iam_role_policy.node_idle) == 0
    error_message = "Without scale_to_zero_after_idle_minutes the nodes may not change the fleet."
  }
  assert {
    condition     = strcontains(jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).agent_config, "scale_to_zero = false")
    error_message = "The agent config says the idle rule is off."
  }
}

run "idle_scale_to_zero_on" {
  command = apply
  variables {
    scale_to_zero_after_idle_minutes = 45
    idle_gpu_utilization_percent     = 3
    nat_gateway_mode                 = "none"
  }

  assert {
    condition     = strcontains(jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).agent_config, "scale_to_zero = true\nminutes = 45\nbelow_percent = 3")
    error_message = "The agent config carries the idle rule's window and threshold."
  }
  assert {
    condition     = length(aws_iam_role_policy.node_idle) == 1 && aws_iam_role_policy.node_idle[0].role == aws_iam_role.node.id
    error_message = "The nodes get the idle rule's permissions in a policy of their own."
  }
  assert {
    condition     = one([for st in data.aws_iam_policy_document.node_idle[0].statement : st.resources if st.sid == "ScaleThisFleet"]) == toset([aws_ec2_fleet.this.arn])
    error_message = "ModifyFleet is scoped to the stack's fleet."
  }
  assert {
    condition     = contains(keys(aws_vpc_endpoint.interface), "ec2")
    error_message = "Without NAT the agents reach EC2 through an interface endpoint."
  }
}
