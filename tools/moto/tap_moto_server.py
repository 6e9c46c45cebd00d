#!/usr/bin/env python3
"""moto_server (moto 5.2.5) plus the two calls tap uses that moto does not implement:
EC2 ModifyFleet (changes a fleet's target capacity and, as EC2 does for a fleet of type
`maintain`, launches or terminates instances to match; ExcessCapacityTerminationPolicy
`termination` terminates the excess, `no-termination` keeps it) and SSM CancelCommand (marks the command and its invocations Cancelled). Everything
else is moto's own. Started by the tests through TAP_MOTO_SERVER, with
moto_server's arguments (-H 127.0.0.1 -p PORT).

A fleet of type `maintain` also replaces a terminated instance, as EC2 does (at once here;
EC2 takes its boot time): TerminateInstances drops it from DescribeFleetInstances and
launches a new one while the fleet is below its target.

With TAP_MOTO_SSM_AGENTS set, Run Command behaves as it does with real SSM agents on the
nodes: an invocation starts `Pending` and stays so until a node's agent stand-in
(tools/moto/ssm_node.py) reports on it with the extra action `TapReportInvocation`
(CommandId, InstanceId, Status, ResponseCode). Without it, invocations are `Success` at once
(moto's own behaviour).

With TAP_MOTO_REQUEST_LOG set, every API call is appended to that file as one line
"SERVICE ACTION APP" (moto's service name, e.g. "cloudwatch GetMetricData", and the caller's
`app/NAME` from its User-Agent, or "-"), so a test can count the requests a component made.
"""
import os
import sys
import threading

from moto.core.responses import ActionResult, BaseResponse
from moto.ec2.responses.fleets import Fleets
from moto.ec2.responses.instances import InstanceResponse
from moto.ssm.models import Command
from moto.ssm.responses import SimpleSystemManagerResponse


def modify_fleet(self):
    fleet_id = self._get_param("FleetId")
    spec = self._get_param("TargetCapacitySpecification", {})
    self.error_on_dryrun()
    fleet = self.ec2_backend.get_fleet(fleet_id)
    if fleet is None:
        from moto.ec2.exceptions import InvalidParameterValueErrorUnknownAttribute

        raise InvalidParameterValueErrorUnknownAttribute(f"fleet {fleet_id}")
    policy = self._get_param("ExcessCapacityTerminationPolicy") or "termination"
    target = int(spec.get("TotalTargetCapacity", fleet.target_capacity))
    fleet.target_capacity = target
    fleet.target_capacity_specification["TotalTargetCapacity"] = target
    if target > fleet.fulfilled_capacity:
        fleet.create_spot_requests(target - fleet.fulfilled_capacity)
    elif target < fleet.fulfilled_capacity and policy == "termination":
        fleet.terminate_instances()
        fleet.fulfilled_capacity = target
    # no-termination: EC2 keeps every running instance (and replaces none below the new target).
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


_terminate_instances = InstanceResponse.terminate_instances


def terminate_instances(self):
    result = _terminate_instances(self)
    for fleet in list(self.ec2_backend.fleets.values()):
        if fleet.fleet_type != "maintain":
            continue
        # moto may already have dropped the terminated instance's request itself.
        fleet.spot_requests = [
            r for r in fleet.spot_requests
            if r.instance is None or r.instance.state not in ("terminated", "shutting-down")
        ]
        fleet.fulfilled_capacity = float(len(fleet.spot_requests))
        if fleet.fulfilled_capacity < fleet.target_capacity:
            fleet.create_spot_requests(fleet.target_capacity - fleet.fulfilled_capacity)
    return result


Fleets.modify_fleet = modify_fleet
SimpleSystemManagerResponse.cancel_command = cancel_command
InstanceResponse.terminate_instances = terminate_instances

_targets = Command._get_instance_ids_from_targets


def instance_ids_from_targets(self):
    # moto reads no Targets as "every instance": a command sent by InstanceIds alone would
    # reach them all.
    return _targets(self) if self.targets else []


Command._get_instance_ids_from_targets = instance_ids_from_targets

if os.environ.get("TAP_MOTO_SSM_AGENTS"):
    _invocation_response = Command.invocation_response

    def pending_invocation(self, instance_id, plugin_name):
        invocation = _invocation_response(self, instance_id, plugin_name)
        invocation.update({"Status": "Pending", "StatusDetails": "Pending", "ResponseCode": -1})
        self.status = "Pending"
        return invocation

    Command.invocation_response = pending_invocation

    def report_invocation(self):
        command = self.ssm_backend.get_command_by_id(self._get_param("CommandId"))
        instance_id = self._get_param("InstanceId")
        status = self._get_param("Status")
        for invocation in command.invocations:
            if invocation["InstanceId"] == instance_id and invocation["Status"] != "Cancelled":
                invocation["Status"] = status
                invocation["StatusDetails"] = status
                invocation["ResponseCode"] = int(self._get_param("ResponseCode", -1))
        states = {i["Status"] for i in command.invocations}
        command.status = states.pop() if len(states) == 1 else "InProgress"
        return "{}"  # not an AWS operation: moto has no model to serialize a result by

    SimpleSystemManagerResponse.tap_report_invocation = report_invocation

# DynamoDB applies a conditional write atomically; moto's server answers requests on many
# threads and checks a condition and writes the item in two steps, so two concurrent
# conditional writes could both succeed (two holders of a lease). One lock around every
# DynamoDB call gives the atomicity the real service has (its calls are quick).
_DYNAMODB = threading.Lock()
_unlocked_call_action = BaseResponse.call_action


def atomic_call_action(self):
    if getattr(self, "service_name", None) == "dynamodb":
        with _DYNAMODB:
            return _unlocked_call_action(self)
    return _unlocked_call_action(self)


BaseResponse.call_action = atomic_call_action

REQUEST_LOG = os.environ.get("TAP_MOTO_REQUEST_LOG")
if REQUEST_LOG:
    _call_action = BaseResponse.call_action

    def logged_call_action(self):
        try:
            action = self._get_action()
        except Exception:  # an unparsable request still gets moto's own answer
            action = "?"
        agent = self.headers.get("x-amz-user-agent") or self.headers.get("User-Agent") or ""
        app = next((t[4:] for t in agent.split() if t.startswith("app/")), "-")
        with open(REQUEST_LOG, "a", encoding="utf-8") as log:
            log.write(f"{getattr(self, 'service_name', '?')} {action} {app}\n")
        return _call_action(self)

    BaseResponse.call_action = logged_call_action

if __name__ == "__main__":
    from moto.server import main

    sys.exit(main())
