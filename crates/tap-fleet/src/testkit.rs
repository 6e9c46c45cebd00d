//! For tests against moto (`--features aws-integration`): the stack's fleet as Terraform
//! creates it.

use aws_sdk_ec2::types::{
    DefaultTargetCapacityType, FleetLaunchTemplateConfigRequest, FleetLaunchTemplateSpecificationRequest, FleetType,
    RequestLaunchTemplateData, SpotOptionsRequest, TargetCapacitySpecificationRequest,
};

/// A launch template and a spot fleet of type maintain with `n` nodes, as the stack makes.
pub async fn make_fleet(sdk: &aws_types::SdkConfig, n: i32) -> String {
    let ec2 = aws_sdk_ec2::Client::new(sdk);
    let lt = ec2
        .create_launch_template()
        .launch_template_name("tap-test-node")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id("ami-12c6146b")
                .instance_type(aws_sdk_ec2::types::InstanceType::P32xlarge)
                .build(),
        )
        .send()
        .await
        .expect("CreateLaunchTemplate");
    let lt_id = lt.launch_template().and_then(|t| t.launch_template_id()).expect("id").to_owned();
    let fleet = ec2
        .create_fleet()
        .r#type(FleetType::Maintain)
        .spot_options(SpotOptionsRequest::builder().build())
        .target_capacity_specification(
            TargetCapacitySpecificationRequest::builder()
                .total_target_capacity(n)
                .spot_target_capacity(n)
                .default_target_capacity_type(DefaultTargetCapacityType::Spot)
                .build(),
        )
        .launch_template_configs(
            FleetLaunchTemplateConfigRequest::builder()
                .launch_template_specification(
                    FleetLaunchTemplateSpecificationRequest::builder()
                        .launch_template_id(lt_id)
                        .version("$Latest")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("CreateFleet");
    fleet.fleet_id().expect("fleet id").to_owned()
}
