#!/usr/bin/env python3
"""moto_server (moto 5.2.5) plus the two calls tap uses that moto does not implement:
EC2 ModifyFleet (changes a fleet's target capacity and, as EC2 does for a fleet of type
`maintain`, launches or terminates instances to match; termination policy: terminate the
excess) and SSM CancelCommand (marks the command and its invocations Cancelled). Everything
else is moto's own. Started by the tests through TAP_MOTO_SERVER, with
moto_server's arguments (-H 127.0.0.1 -p PORT).
"""
import sys

from moto.core.responses import ActionResult
from moto.ec2.responses.fleets import Fleets
from moto.ssm.responses import SimpleSystemManagerResponse


def modify_fleet(self):
    fleet_id = self._get_param("FleetId")
    spec = self._get_param("TargetCapacitySpecification", {})
    self.error_on_dryrun()
    fleet = self.ec2_backend.get_fleet(fleet_id)
    if fleet is None:
        from moto.ec2.exceptions import InvalidParameterValueErrorUnknownAttribute

        raise InvalidParameterValueErrorUnknownAttribute(f"fleet {fleet_id}")
    target = int(spec.get("TotalTargetCapacity", fleet.target_capacity))
    fleet.target_capacity = target
    fleet.target_capacity_specification["TotalTargetCapacity"] = target
    if target > fleet.fulfilled_capacity:
        fleet.create_spot_requests(target - fleet.fulfilled_capacity)
    elif target < fleet.fulfilled_capacity:
        fleet.terminate_instances()
        fleet.fulfilled_capacity = target
    return ActionResult({"Return": True})


def cancel_command(self):
    command_id = self._get_param("CommandId")
    instance_ids = self._get_param("InstanceIds") or []
    command = self.ssm_backend.get_command_by_id(command_id)
    command.status = "Cancelled"
    for invocation in command.invocations:
        if not instance_ids or invocation["InstanceId"] in instance_ids:
            invocation["Status"] = "Cancelled"
            invocation["StatusDetails"] = "Cancelled"
    return ActionResult({})


Fleets.modify_fleet = modify_fleet
SimpleSystemManagerResponse.cancel_command = cancel_command

if __name__ == "__main__":
    from moto.server import main

    sys.exit(main())
