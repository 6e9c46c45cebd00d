# Shared mock data for `terraform test` (loaded with `mock_provider "aws" { source = "./tests" }`).
mock_data "aws_availability_zones" {
  defaults = {
    names = ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d"]
  }
}

mock_data "aws_ssm_parameter" {
  defaults = {
    value = "ami-0123456789abcdef0"
  }
}

mock_data "aws_ami" {
  defaults = {
    root_device_name = "/dev/sda1"
  }
}

mock_data "aws_caller_identity" {
  defaults = {
    account_id = "123456789012"
  }
}

mock_data "aws_partition" {
  defaults = {
    partition = "aws"
  }
}

mock_resource "aws_launch_template" {
  defaults = {
    latest_version = 1
  }
}

mock_resource "aws_cloudwatch_log_group" {
  defaults = {
    arn = "arn:aws:logs:us-east-1:123456789012:log-group:/tap/dev/training"
  }
}

mock_resource "aws_s3_bucket" {
  defaults = {
    arn = "arn:aws:s3:::mock-bucket"
  }
}

# The account already has EC2 Fleet's service-linked role (validation.tftest.hcl removes it).
mock_data "aws_iam_roles" {
  defaults = {
    names = ["AWSServiceRoleForEC2Fleet"]
  }
}
