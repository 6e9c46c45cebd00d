# The node's user_data for the defaults and for each mode that changes it. scripts/test-boot.sh
# runs this file with -verbose and executes the rendered scripts as root in a sandbox
# (tools/boot-test): the boot test runs what the stack really renders, never a copy.
mock_provider "aws" {
  source = "./tests"
}

run "boot_defaults" {
  command = apply

  assert {
    condition     = startswith(base64decode(aws_launch_template.node.user_data), "#!/bin/bash\n")
    error_message = "user_data is a bash script."
  }
}

run "boot_custom_ami" {
  command = apply
  variables {
    custom_ami_id = "ami-0fedcba9876543210"
  }

  assert {
    condition     = jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).ami_id == "ami-0fedcba9876543210"
    error_message = "Driver failures are counted per AMI."
  }
}

run "boot_nat_none" {
  command = apply
  variables {
    nat_gateway_mode = "none"
  }

  assert {
    condition     = startswith(base64decode(aws_launch_template.node.user_data), "#!/bin/bash\n")
    error_message = "user_data is a bash script."
  }
}

run "boot_agent_url" {
  command = apply
  variables {
    agent_binary_url = "https://releases.example.com/tap-agent-1.0.0"
  }

  assert {
    condition     = strcontains(base64decode(aws_launch_template.node.user_data), "https://releases.example.com/tap-agent-1.0.0") && jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).cli_source == "https://releases.example.com/tap"
    error_message = "The binaries come from agent_binary_url."
  }
}

run "boot_idle" {
  command = apply
  variables {
    scale_to_zero_after_idle_minutes = 60
  }

  assert {
    condition     = strcontains(jsondecode(base64decode(aws_s3_object.node_boot.content_base64)).agent_config, "scale_to_zero = true")
    error_message = "The idle rule is on in the agent config."
  }
}

run "boot_kms" {
  command = apply
  variables {
    kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/0123abcd-0123-4567-89ab-0123456789ab"
  }

  assert {
    condition     = startswith(base64decode(aws_launch_template.node.user_data), "#!/bin/bash\n")
    error_message = "user_data is a bash script."
  }
}
