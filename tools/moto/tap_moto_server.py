#!/usr/bin/env python3
"""moto_server (moto 5.2.5) plus the two calls tap uses that moto does not implement:
EC2 ModifyFleet (changes a fleet's target capacity and, as EC2 does for a fleet of type
`maintain`, launches or terminates instances to match; termination policy: terminate the
excess) and SSM CancelCommand (marks the command and its invocations Cancelled). Everything
else is moto's own. Started by the tests through TAP_MOTO_SERVER, with
moto_server's arguments (-H 127.0.0.1 -p PORT).

With TAP_MOTO_REQUEST_LOG set, every API call is appended to that file as one line
"SERVICE ACTION" (moto's service name, e.g. "cloudwatch GetMetricData"), so a test can
count the requests a component made.
"""
import os
import sys

from moto.core.responses import ActionResult, BaseResponse
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

REQUEST_LOG = os.environ.get("TAP_MOTO_REQUEST_LOG")
if REQUEST_LOG:
    _call_action = BaseResponse.call_action

    def logged_call_action(self):
        try:
            action = self._get_action()
        except Exception:  # an unparsable request still gets moto's own answer
            action = "?"
        with open(REQUEST_LOG, "a", encoding="utf-8") as log:
            log.write(f"{getattr(self, 'service_name', '?')} {action}\n")
        return _call_action(self)

    BaseResponse.call_action = logged_call_action

if __name__ == "__main__":
    from moto.server import main

    sys.exit(main())
