#!/usr/bin/env python3
"""A schema-only stand-in for the hashicorp/aws Terraform provider (plugin protocol 6).

It serves the real provider schema (extracted by extract_schema.py) so that
`terraform validate` and `terraform test` with `mock_provider "aws"` check tap-stack.tf
offline. It never talks to AWS: every validate call succeeds (Terraform itself checks the
configuration against the schema) and any call that would create or read real
infrastructure fails with a diagnostic saying so.
"""
import json
import sys

from tfplugin_proto import tfplugin6_4_pb2 as pb
from tfplugin_proto import tfplugin6_4_pb2_grpc as pbg
from tfprovider.level1.rpc_plugin import SyncRPCPluginServer

NOT_REAL = "the tap stand-in aws provider only serves the schema; use mock_provider in terraform test"


def block(js):
    b = pb.Schema.Block()
    for a in js["attributes"]:
        attr = b.attributes.add(name=a["name"], required=a["required"], optional=a["optional"],
                                computed=a["computed"])
        if "nested_type" in a:
            nt = a["nested_type"]
            obj = block({"attributes": nt["attributes"], "block_types": []})
            attr.nested_type.attributes.extend(obj.attributes)
            attr.nested_type.nesting = getattr(pb.Schema.Object, nt["nesting"])
        else:
            attr.type = json.dumps(a["type"]).encode()
    for nb in js["block_types"]:
        n = b.block_types.add(type_name=nb["type_name"], min_items=nb["min_items"],
                              max_items=nb["max_items"])
        n.nesting = getattr(pb.Schema.NestedBlock, nb["nesting"])
        n.block.CopyFrom(block(nb["block"]))
    return b


def load_schema(path):
    with open(path) as f:
        js = json.load(f)
    resp = pb.GetProviderSchema.Response()
    resp.provider.block.CopyFrom(block(js["provider"]))
    for name, s in js["resource_schemas"].items():
        resp.resource_schemas[name].block.CopyFrom(block(s))
    for name, s in js["data_source_schemas"].items():
        resp.data_source_schemas[name].block.CopyFrom(block(s))
    resp.server_capabilities.plan_destroy = True
    return resp


def error(resp_cls):
    return resp_cls(diagnostics=[pb.Diagnostic(severity=pb.Diagnostic.ERROR, summary=NOT_REAL)])


class StandIn(pbg.ProviderServicer):
    def __init__(self, schema_path):
        self.schema = load_schema(schema_path)

    def GetMetadata(self, request, context):
        return pb.GetMetadata.Response(server_capabilities=self.schema.server_capabilities)

    def GetProviderSchema(self, request, context):
        return self.schema

    def ValidateProviderConfig(self, request, context):
        return pb.ValidateProviderConfig.Response()

    def ValidateResourceConfig(self, request, context):
        return pb.ValidateResourceConfig.Response()

    def ValidateDataResourceConfig(self, request, context):
        return pb.ValidateDataResourceConfig.Response()

    def ConfigureProvider(self, request, context):
        return pb.ConfigureProvider.Response()

    def UpgradeResourceState(self, request, context):
        return error(pb.UpgradeResourceState.Response)

    def ReadResource(self, request, context):
        return error(pb.ReadResource.Response)

    def PlanResourceChange(self, request, context):
        return error(pb.PlanResourceChange.Response)

    def ApplyResourceChange(self, request, context):
        return error(pb.ApplyResourceChange.Response)

    def ImportResourceState(self, request, context):
        return error(pb.ImportResourceState.Response)

    def ReadDataSource(self, request, context):
        return error(pb.ReadDataSource.Response)

    def StopProvider(self, request, context):
        return pb.StopProvider.Response()


class Server(SyncRPCPluginServer):
    def __init__(self, servicer):
        super().__init__(servicer)
        # go-plugin decodes the server certificate with base64.RawStdEncoding, which rejects
        # padding; tfprovider pads it, so about one start in three failed with
        # "error parsing server cert: illegal base64 data".
        self.cert_base64 = self.cert_base64.rstrip("=")


if __name__ == "__main__":
    Server(StandIn(sys.argv[1])).run()
    sys.exit(0)
