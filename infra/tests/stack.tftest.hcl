# Every requirement of the stack on its defaults (nat_gateway_mode = "single", SSM AMI lookup).
mock_provider "aws" {
  source = "./tests"
}

run "network" {
  command = apply

  assert {
    condition     = length(aws_subnet.private) == 3 && length(distinct(aws_subnet.private[*].availability_zone)) == 3
    error_message = "Expected 3 private subnets in 3 different AZs."
  }
  assert {
    condition     = aws_subnet.private[*].availability_zone == ["us-east-1a", "us-east-1b", "us-east-1c"]
    error_message = "AZs must come from data.aws_availability_zones, not be hard-coded."
  }
  assert {
    condition     = alltrue([for s in aws_subnet.private : s.map_public_ip_on_launch == false])
    error_message = "Private subnets must not assign public IPs."
  }
  assert {
    condition     = length(aws_nat_gateway.this) == 1 && length(aws_eip.nat) == 1 && length(aws_subnet.public) == 1
    error_message = "single mode: exactly one NAT gateway, one EIP and one public subnet."
  }
  assert {
    condition     = alltrue([for r in aws_route.private_nat : r.nat_gateway_id == aws_nat_gateway.this[0].id]) && length(aws_route.private_nat) == 3
    error_message = "single mode: every private route table must route 0.0.0.0/0 to the one NAT gateway."
  }
  assert {
    condition     = toset(keys(aws_vpc_endpoint.gateway)) == toset(["s3", "dynamodb"]) && alltrue([for e in aws_vpc_endpoint.gateway : e.vpc_endpoint_type == "Gateway" && length(e.route_table_ids) == 3])
    error_message = "S3 and DynamoDB gateway endpoints must serve all three private route tables."
  }
  assert {
    condition     = aws_vpc_endpoint.gateway["s3"].service_name == "com.amazonaws.us-east-1.s3"
    error_message = "Endpoint service names must follow var.aws_region."
  }
  assert {
    condition     = length(aws_vpc_endpoint.interface) == 0
    error_message = "Interface endpoints are off by default when a NAT gateway exists."
  }
  assert {
    condition     = length(aws_flow_log.this) == 1 && aws_flow_log.this[0].traffic_type == "ALL"
    error_message = "VPC flow logs must be on by default."
  }
}

run "security_group" {
  command = apply

  assert {
    condition     = aws_vpc_security_group_ingress_rule.nodes_self.referenced_security_group_id == aws_security_group.nodes.id && aws_vpc_security_group_ingress_rule.nodes_self.ip_protocol == "-1"
    error_message = "Nodes must accept all traffic from each other (self-referencing rule)."
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.nodes_self.cidr_ipv4 == null
    error_message = "No node ingress may come from a CIDR (the internet)."
  }
  assert {
    condition     = aws_vpc_security_group_egress_rule.nodes_self.referenced_security_group_id == aws_security_group.nodes.id
    error_message = "Nodes must be able to send all traffic to each other."
  }
  assert {
    condition     = toset([for r in aws_vpc_security_group_egress_rule.nodes_internet : r.from_port]) == toset([80, 443])
    error_message = "Egress to the internet is limited to HTTP and HTTPS."
  }
  assert {
    condition     = alltrue([for k, r in aws_vpc_security_group_egress_rule.nodes_gateway_endpoints : r.prefix_list_id == aws_vpc_endpoint.gateway[k].prefix_list_id && r.from_port == 443])
    error_message = "HTTPS to S3 and DynamoDB is allowed through their gateway endpoint prefix lists."
  }
}

run "launch_template" {
  command = apply

  assert {
    condition     = aws_launch_template.node.metadata_options[0].http_tokens == "required" && aws_launch_template.node.metadata_options[0].http_put_response_hop_limit == 2
    error_message = "IMDSv2 must be required with hop limit 2 (containers)."
  }
  assert {
    condition     = aws_launch_template.node.block_device_mappings[0].device_name == "/dev/sda1" && aws_launch_template.node.block_device_mappings[0].ebs[0].volume_type == "gp3" && aws_launch_template.node.block_device_mappings[0].ebs[0].encrypted == "true" && aws_launch_template.node.block_device_mappings[0].ebs[0].volume_size == 200
    error_message = "Root volume must be an encrypted 200 GiB gp3 on the AMI's root device."
  }
  assert {
    condition     = aws_launch_template.node.network_interfaces[0].associate_public_ip_address == "false"
    error_message = "Nodes must not get public IPs."
  }
  assert {
    condition     = aws_launch_template.node.monitoring[0].enabled == true
    error_message = "Detailed monitoring must be on."
  }
  assert {
    condition     = aws_launch_template.node.instance_initiated_shutdown_behavior == "terminate"
    error_message = "A node that powers itself off must terminate so the fleet replaces it."
  }
  assert {
    condition     = toset([for t in aws_launch_template.node.tag_specifications : t.resource_type]) == toset(["instance", "volume", "spot-instances-request"])
    error_message = "Instances, volumes and spot requests are tagged, and nothing else: the fleet's service-linked role may not tag network interfaces, so an ENI tag specification fails every launch."
  }
  assert {
    condition     = alltrue([for t in aws_launch_template.node.tag_specifications : t.tags["TapFleet"] == "tap-dev" && t.tags["Environment"] == "dev"])
    error_message = "Every launched resource carries the stack tags and the TapFleet tag used by SendCommand."
  }
  assert {
    condition     = aws_launch_template.node.image_id == "ami-0123456789abcdef0"
    error_message = "Without custom_ami_id the AMI comes from the SSM parameter."
  }
}

run "user_data" {
  command = apply

  assert {
    condition     = length(base64decode(aws_launch_template.node.user_data)) < 2048
    error_message = "user_data stays a launcher under 2 KB: the boot itself is tap-agent bootstrap."
  }
  assert {
    condition     = strcontains(base64decode(aws_launch_template.node.user_data), "exec $A bootstrap --settings 's3://ml-model-artifacts-dev-123456789012-us-east-1/tap/node/boot.json' --region us-east-1")
    error_message = "user_data hands the boot to tap-agent bootstrap with the stack's settings."
  }
  assert {
    condition     = aws_s3_object.node_boot.key == "tap/node/boot.json" && aws_s3_object.node_boot.bucket == "ml-model-artifacts-dev-123456789012-us-east-1"
    error_message = "The boot settings are stored where user_data tells tap-agent to read them."
  }
  assert {
    condition     = jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).volta_driver_package == "nvidia-driver-580-server" && jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).max_driver_failures == 3 && jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).ami_id == "ami-0123456789abcdef0" && jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).table == "tap-dev-experiments"
    error_message = "The boot installs the Volta-capable driver when nvidia-smi fails and counts failures per AMI in the experiment table, capped at max_driver_failures."
  }
  assert {
    condition     = jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).cloudwatch_agent_url == "https://amazoncloudwatch-agent-us-east-1.s3.us-east-1.amazonaws.com/ubuntu/amd64/latest/amazon-cloudwatch-agent.deb"
    error_message = "The boot installs the CloudWatch agent from the regional bucket."
  }
  assert {
    condition     = strcontains(base64decode(aws_launch_template.node.user_data), "aws s3 cp --only-show-errors 's3://ml-model-artifacts-dev-123456789012-us-east-1/tap/bin/tap-agent' /tmp/tap-agent")
    error_message = "tap-agent is fetched from the artifacts bucket by default."
  }
  assert {
    condition     = jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).cli_source == "s3://ml-model-artifacts-dev-123456789012-us-east-1/tap/bin/tap"
    error_message = "tap comes from beside tap-agent."
  }
  assert {
    condition     = strcontains(jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).agent_config, "namespace = \"Tap/GPU\"") && strcontains(jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).agent_config, "environment = \"dev\"")
    error_message = "The agent config the boot writes carries the contract namespace and the environment."
  }
  assert {
    condition     = strcontains(jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).cloudwatch_agent_config, "\"file_path\":\"/var/log/tap/*.log\"") && strcontains(jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).cloudwatch_agent_config, "\"log_group_name\":\"/tap/dev/training\"")
    error_message = "The CloudWatch agent ships the training logs to the log group."
  }
  assert {
    condition     = length(aws_s3_object.agent) == 0
    error_message = "No binary is uploaded unless agent_binary_path is set."
  }
  assert {
    condition     = strcontains(base64decode(aws_launch_template.node.user_data), "for i in $(seq 60); do") && strcontains(base64decode(aws_launch_template.node.user_data), "sleep 10") && !strcontains(base64decode(aws_launch_template.node.user_data), "--retry 5")
    error_message = "Downloads at boot retry for minutes (60 x 10 s), not curl's ~30 s: the network of a new stack may still be settling."
  }
  assert {
    condition     = jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).tap_config.table_name == "tap-dev-experiments" && jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).tap_config.stack == "tap-dev"
    error_message = "tap on the node is configured for the stack."
  }
}

run "fleet" {
  command = apply

  assert {
    condition     = aws_ec2_fleet.this.type == "maintain" && aws_ec2_fleet.this.replace_unhealthy_instances == true && aws_ec2_fleet.this.terminate_instances == true
    error_message = "Fleet must be type maintain, replace unhealthy instances and terminate instances on delete."
  }
  assert {
    condition     = aws_ec2_fleet.this.target_capacity_specification[0].default_target_capacity_type == "spot" && aws_ec2_fleet.this.target_capacity_specification[0].total_target_capacity == 6
    error_message = "Fleet must be 6 instances, spot by default (and spot only: no on-demand capacity is asked for)."
  }
  # The provider makes spot_target_capacity and on_demand_target_capacity ForceNew (diff
  # suppressed only when unset): setting either replaces the fleet, killing every node, on a
  # capacity change or after an out-of-band ModifyFleet. The stand-in cannot see ForceNew, so
  # this holds our own values to the rule.
  assert {
    condition     = aws_ec2_fleet.this.target_capacity_specification[0].spot_target_capacity == null && aws_ec2_fleet.this.target_capacity_specification[0].on_demand_target_capacity == null
    error_message = "Only total_target_capacity may be set: spot_target_capacity / on_demand_target_capacity are ForceNew and would replace the fleet on every capacity change."
  }
  assert {
    condition     = aws_ec2_fleet.this.spot_options[0].maintenance_strategies[0].capacity_rebalance[0].replacement_strategy == "launch-before-terminate" && aws_ec2_fleet.this.spot_options[0].maintenance_strategies[0].capacity_rebalance[0].termination_delay == 600
    error_message = "Capacity rebalancing must be launch-before-terminate with a 600 s termination delay (\"launch\" fails the apply: the provider always sends TerminationDelay)."
  }
  assert {
    condition     = alltrue([for o in aws_ec2_fleet.this.launch_template_config[0].override : o.priority >= 1])
    error_message = "Override priorities start at 1: the provider drops priority = 0."
  }
  assert {
    condition     = length(aws_iam_service_linked_role.ec2_fleet) == 0
    error_message = "The EC2 Fleet service-linked role is not created by default (one per account; the precondition checks it exists)."
  }
  assert {
    condition     = aws_ec2_fleet.this.spot_options[0].allocation_strategy == "capacity-optimized-prioritized"
    error_message = "Default allocation strategy is capacity-optimized-prioritized, the only one that reads the home AZ's priorities."
  }
  # Issue 22: the fleet gathers in one home AZ (the first by default) so a multi-node job finds
  # its nodes together; the other two AZs stay as fallback, after every home pool.
  assert {
    condition     = output.home_availability_zone == "us-east-1a" && aws_subnet.private[0].availability_zone == "us-east-1a"
    error_message = "The home AZ is the first of the fleet's AZs by default."
  }
  assert {
    condition     = alltrue([for o in aws_ec2_fleet.this.launch_template_config[0].override : o.priority == (o.subnet_id == aws_subnet.private[0].id ? 1 : 2)])
    error_message = "The home AZ's subnet gets priority 1, the other two AZs priority 2."
  }
  assert {
    condition     = length(aws_ec2_fleet.this.launch_template_config[0].override) == 3 && toset(aws_ec2_fleet.this.launch_template_config[0].override[*].subnet_id) == toset(aws_subnet.private[*].id) && alltrue([for o in aws_ec2_fleet.this.launch_template_config[0].override : o.instance_type == "p3.2xlarge"])
    error_message = "One p3.2xlarge override per private subnet."
  }
  assert {
    condition     = aws_ec2_fleet.this.launch_template_config[0].launch_template_specification[0].launch_template_id == aws_launch_template.node.id
    error_message = "Fleet must launch from the stack's launch template."
  }
}

run "fleet_diversified" {
  command = apply
  variables {
    instance_types = ["p3.2xlarge", "g5.2xlarge"]
  }

  assert {
    condition     = length(aws_ec2_fleet.this.launch_template_config[0].override) == 6
    error_message = "One override per (instance type, private subnet)."
  }
  assert {
    condition     = toset([for o in aws_ec2_fleet.this.launch_template_config[0].override : "${o.instance_type}/${o.priority}" if o.subnet_id == aws_subnet.private[0].id]) == toset(["p3.2xlarge/1", "g5.2xlarge/2"])
    error_message = "In the home AZ, override priority follows the order of instance_types."
  }
  assert {
    condition     = toset([for o in aws_ec2_fleet.this.launch_template_config[0].override : "${o.instance_type}/${o.priority}" if o.subnet_id != aws_subnet.private[0].id]) == toset(["p3.2xlarge/3", "g5.2xlarge/4"])
    error_message = "The other AZs come after every home pool, in instance_types order."
  }
}

run "fleet_home_az_named" {
  command = apply
  variables {
    home_availability_zone = "us-east-1b"
  }

  assert {
    condition     = output.home_availability_zone == "us-east-1b"
    error_message = "The named home AZ is the output's."
  }
  assert {
    condition     = alltrue([for o in aws_ec2_fleet.this.launch_template_config[0].override : o.priority == (o.subnet_id == aws_subnet.private[1].id ? 1 : 2)])
    error_message = "The named home AZ's subnet (the second) gets priority 1."
  }
}

run "fleet_spread_without_home_az" {
  command = apply
  variables {
    home_availability_zone   = "none"
    spot_allocation_strategy = "price-capacity-optimized"
  }

  assert {
    condition     = output.home_availability_zone == null && aws_ec2_fleet.this.spot_options[0].allocation_strategy == "price-capacity-optimized"
    error_message = "No home AZ: the fleet spreads by the strategy alone."
  }
  assert {
    condition     = alltrue([for o in aws_ec2_fleet.this.launch_template_config[0].override : o.priority == 1])
    error_message = "Without a home AZ every subnet has the same priority."
  }
}

run "storage" {
  command = apply

  assert {
    condition     = toset([for b in aws_s3_bucket.this : b.bucket]) == toset(["ml-training-data-dev-123456789012-us-east-1", "ml-model-artifacts-dev-123456789012-us-east-1"])
    error_message = "Bucket names are ml-training-data-<env> and ml-model-artifacts-<env>, made unique by default with the account id and region."
  }
  assert {
    condition     = alltrue([for p in aws_s3_bucket_public_access_block.this : p.block_public_acls && p.block_public_policy && p.ignore_public_acls && p.restrict_public_buckets])
    error_message = "Both buckets block all public access."
  }
  assert {
    condition     = alltrue([for v in aws_s3_bucket_versioning.this : v.versioning_configuration[0].status == "Enabled"])
    error_message = "Both buckets are versioned."
  }
  assert {
    condition     = alltrue([for e in aws_s3_bucket_server_side_encryption_configuration.this : one(e.rule).apply_server_side_encryption_by_default[0].sse_algorithm == "AES256"])
    error_message = "SSE-S3 by default."
  }
  assert {
    condition     = alltrue([for l in aws_s3_bucket_lifecycle_configuration.this : one([for t in l.rule[0].transition : t.days == 30 && t.storage_class == "GLACIER_IR"])])
    error_message = "Current versions move to Glacier (Instant Retrieval) after 30 days."
  }
  assert {
    condition     = alltrue([for l in aws_s3_bucket_lifecycle_configuration.this : l.rule[0].noncurrent_version_expiration[0].noncurrent_days == 180 && one([for t in l.rule[0].noncurrent_version_transition : t.noncurrent_days]) == 30])
    error_message = "Noncurrent versions are archived, then expired."
  }
  assert {
    condition     = alltrue([for l in aws_s3_bucket_lifecycle_configuration.this : l.rule[0].abort_incomplete_multipart_upload[0].days_after_initiation == 7])
    error_message = "Incomplete multipart uploads are aborted."
  }
  assert {
    condition     = alltrue([for d in data.aws_iam_policy_document.bucket : anytrue([for s in d.statement : s.effect == "Deny" && anytrue([for c in s.condition : c.variable == "aws:SecureTransport" && c.values == tolist(["false"])])])])
    error_message = "Bucket policies deny non-TLS requests."
  }
}

run "tracking_and_hparams" {
  command = apply

  assert {
    condition     = aws_dynamodb_table.experiments.billing_mode == "PAY_PER_REQUEST" && aws_dynamodb_table.experiments.hash_key == "experiment_id" && aws_dynamodb_table.experiments.range_key == "run_id" && one(aws_dynamodb_table.experiments.global_secondary_index).name == "runs_by_start" && one(aws_dynamodb_table.experiments.global_secondary_index).range_key == "started_ms"
    error_message = "Table: on-demand, experiment_id / run_id."
  }
  assert {
    condition     = aws_dynamodb_table.experiments.point_in_time_recovery[0].enabled && aws_dynamodb_table.experiments.server_side_encryption[0].enabled && aws_dynamodb_table.experiments.deletion_protection_enabled
    error_message = "Table: PITR, SSE and deletion protection on."
  }
  assert {
    condition     = toset([for p in aws_ssm_parameter.hparams : p.name]) == toset(["/ml/hparams/learning_rate", "/ml/hparams/batch_size", "/ml/hparams/epochs"])
    error_message = "Hyperparameters live under /ml/hparams."
  }
  assert {
    condition     = alltrue([for p in aws_ssm_parameter.hparams : p.type == "SecureString"])
    error_message = "Hyperparameters are SecureStrings."
  }
}

run "iam" {
  command = apply

  assert {
    condition     = alltrue([for s in data.aws_iam_policy_document.node.statement : !contains(tolist(s.resources), "*") || contains(["PublishMetrics", "ReadCommandResults", "JobControllerReads", "CancelJobCommands"], s.sid)])
    error_message = "Only PutMetricData, command-result reads, the job controller's reads and CancelCommand may use Resource \"*\"."
  }
  assert {
    condition     = toset(one([for s in data.aws_iam_policy_document.node.statement : s.actions if s.sid == "JobControllerReads"])) == toset(["ec2:DescribeFleets", "ec2:DescribeFleetInstances", "ec2:DescribeInstances", "cloudwatch:GetMetricData"]) && toset(one([for s in data.aws_iam_policy_document.node.statement : s.actions if s.sid == "CancelJobCommands"])) == toset(["ssm:CancelCommand"])
    error_message = "The job controller's \"*\" statements only read EC2 and metrics, and cancel commands."
  }
  assert {
    condition     = anytrue([for c in one([for s in data.aws_iam_policy_document.node.statement : s if s.sid == "PublishMetrics"]).condition : c.test == "StringEquals" && c.variable == "cloudwatch:namespace" && c.values == tolist(["Tap/GPU", "Tap/Host"])])
    error_message = "PutMetricData is conditioned on tap's namespaces."
  }
  assert {
    condition     = anytrue([for c in one([for s in data.aws_iam_policy_document.node.statement : s if s.sid == "RunCommandOnFleetInstances"]).condition : c.test == "StringEquals" && c.variable == "ssm:resourceTag/TapFleet" && c.values == tolist(["tap-dev"])])
    error_message = "SendCommand is limited to instances tagged with this fleet."
  }
  assert {
    condition     = one([for s in data.aws_iam_policy_document.node.statement : s if s.sid == "RunCommandDocument"]).resources == toset(["arn:aws:ssm:us-east-1::document/AWS-RunShellScript"])
    error_message = "SendCommand may only run AWS-RunShellScript."
  }
  assert {
    condition     = one([for s in data.aws_iam_policy_document.node.statement : s if s.sid == "ReadHyperparameters"]).resources == toset(["arn:aws:ssm:us-east-1:123456789012:parameter/ml/hparams", "arn:aws:ssm:us-east-1:123456789012:parameter/ml/hparams/*"])
    error_message = "Parameter reads are scoped to the hyperparameter path."
  }
  assert {
    condition     = one([for s in data.aws_iam_policy_document.node.statement : s if s.sid == "ExperimentTable"]).resources == toset([aws_dynamodb_table.experiments.arn, "${aws_dynamodb_table.experiments.arn}/index/runs_by_start"])
    error_message = "Table access is scoped to the experiment table and its runs index."
  }
  assert {
    condition     = aws_iam_role_policy_attachment.ssm_core.policy_arn == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    error_message = "Nodes get AmazonSSMManagedInstanceCore so Run Command reaches them."
  }
  assert {
    condition     = aws_launch_template.node.iam_instance_profile[0].arn == aws_iam_instance_profile.node.arn && aws_iam_instance_profile.node.role == aws_iam_role.node.name
    error_message = "Nodes run with the stack's instance profile."
  }
}

run "monitoring_contract" {
  command = apply

  assert {
    condition     = toset(keys(aws_cloudwatch_metric_alarm.this)) == toset(["low-gpu-utilization", "no-gpu-metrics", "high-gpu-temperature", "gpu-unhealthy", "fleet-scaled-to-zero"])
    error_message = "Five alarms: low utilization, missing metrics, high temperature, unhealthy GPU, and the fleet's intent (scaled to zero)."
  }
  assert {
    condition     = alltrue([for a in aws_cloudwatch_metric_alarm.this : a.namespace == local.metric_contract.namespace && contains([for m in values(local.metric_contract.metrics) : m.name], a.metric_name)])
    error_message = "Every alarm watches a metric of the contract's namespace."
  }
  assert {
    condition     = alltrue([for k, a in aws_cloudwatch_metric_alarm.this : sort(keys(a.dimensions)) == sort(local.metric_contract.dimension_sets.fleet) && contains(local.metric_contract.metrics[local.alarms[k].metric].sets, "fleet")])
    error_message = "Every alarm uses the exact fleet dimension set, on a metric the agent publishes with that set."
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.this["no-gpu-metrics"].treat_missing_data == "breaching" && aws_cloudwatch_metric_alarm.this["no-gpu-metrics"].metric_name == "AgentHeartbeat"
    error_message = "Missing heartbeats must count as breaching."
  }
  assert {
    condition     = alltrue([for k, a in aws_cloudwatch_metric_alarm.this : a.treat_missing_data == "notBreaching" if !contains(["no-gpu-metrics", "fleet-scaled-to-zero"], k)])
    error_message = "Only the heartbeat alarm treats missing data as breaching (an idle fleet is not on fire)."
  }
  assert {
    condition     = alltrue([for k, a in aws_cloudwatch_metric_alarm.this : a.alarm_actions == toset([aws_sns_topic.alarms.arn]) if !contains(["no-gpu-metrics", "fleet-scaled-to-zero"], k)])
    error_message = "Alarms notify the SNS topic."
  }
  assert {
    condition     = length(aws_cloudwatch_metric_alarm.this["no-gpu-metrics"].alarm_actions) == 0 && length(aws_cloudwatch_metric_alarm.this["fleet-scaled-to-zero"].alarm_actions) == 0
    error_message = "The heartbeat alarm pages only through the composite alarm, and the intent alarm never pages."
  }
  assert {
    condition     = length(aws_sns_topic_subscription.email) == 0
    error_message = "No e-mail subscription without alarm_email."
  }
  assert {
    condition     = aws_cloudwatch_log_group.training.name == "/tap/dev/training" && aws_cloudwatch_log_group.training.retention_in_days == 90
    error_message = "Training log group with retention."
  }
  assert {
    condition     = strcontains(aws_cloudwatch_dashboard.gpus.dashboard_body, "{Tap/GPU,Environment,InstanceId,GpuUuid} MetricName=\\\"GPUUtilization\\\"")
    error_message = "The dashboard searches the per-GPU dimension set of the contract."
  }
}

run "outputs" {
  command = apply

  assert {
    condition     = output.training_data_bucket_name == "ml-training-data-dev-123456789012-us-east-1" && output.model_artifacts_bucket_name == "ml-model-artifacts-dev-123456789012-us-east-1"
    error_message = "Bucket name outputs."
  }
  assert {
    condition     = output.dynamodb_table_name == "tap-dev-experiments" && output.iam_role_name == "tap-dev-us-east-1-node" && output.ec2_fleet_id == aws_ec2_fleet.this.id
    error_message = "Table, role and fleet outputs."
  }
  assert {
    condition     = output.tap_config.version == 1 && output.tap_config.region == "us-east-1" && output.tap_config.metric_namespace == "Tap/GPU" && output.tap_config.hparam_prefix == "/ml/hparams" && length(output.tap_config.private_subnet_ids) == 3
    error_message = "tap_config carries what `tap stack import` needs."
  }
}

# An intended zero (the idle rule, `tap fleet scale 0`) must stay quiet; a fleet that should
# run and sends no heartbeat must page, also after a scale-up whose nodes never report.
run "fleet_not_reporting_alarm" {
  command = apply

  assert {
    condition     = aws_cloudwatch_composite_alarm.fleet_not_reporting.alarm_rule == "ALARM(\"tap-dev-no-gpu-metrics\")" && aws_cloudwatch_composite_alarm.fleet_not_reporting.alarm_actions == toset([aws_sns_topic.alarms.arn])
    error_message = "The composite alarm pages when the heartbeat alarm is in ALARM."
  }
  assert {
    condition     = one(aws_cloudwatch_composite_alarm.fleet_not_reporting.actions_suppressor).alarm == "tap-dev-fleet-scaled-to-zero" && one(aws_cloudwatch_composite_alarm.fleet_not_reporting.actions_suppressor).extension_period >= 1200
    error_message = "The fleet's intent alarm suppresses it, and the suppression outlasts a scale-up by a node's boot time."
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.this["fleet-scaled-to-zero"].metric_name == "FleetScaledToZero" && aws_cloudwatch_metric_alarm.this["fleet-scaled-to-zero"].treat_missing_data == "ignore" && aws_cloudwatch_metric_alarm.this["fleet-scaled-to-zero"].comparison_operator == "GreaterThanOrEqualToThreshold" && aws_cloudwatch_metric_alarm.this["fleet-scaled-to-zero"].threshold == 1
    error_message = "The intent alarm is in ALARM while the last FleetScaledToZero published is 1, through the silence after it (missing data ignored)."
  }
  assert {
    condition     = aws_cloudwatch_composite_alarm.fleet_not_reporting.actions_enabled == true
    error_message = "A fleet meant to run pages when it stops reporting."
  }
}

# After `tap fleet scale` or the idle rule changed the capacity, Terraform's next apply changes
# the total in place and keeps the fleet (its id stays what every tap config holds).
run "capacity_change_keeps_the_fleet" {
  command = apply
  variables {
    target_capacity = 2
  }

  assert {
    condition     = aws_ec2_fleet.this.target_capacity_specification[0].total_target_capacity == 2 && aws_ec2_fleet.this.target_capacity_specification[0].spot_target_capacity == null
    error_message = "A capacity change sets only the total (an in-place ModifyFleet)."
  }
  assert {
    condition     = aws_ec2_fleet.this.id == run.fleet_not_reporting_alarm.ec2_fleet_id
    error_message = "Changing target_capacity must not replace the fleet."
  }
}
