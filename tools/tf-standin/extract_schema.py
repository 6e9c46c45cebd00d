#!/usr/bin/env python3
"""Extract the hashicorp/aws provider schema from the @cdktf/provider-aws npm package.

cdktf generates one TypeScript module per resource / data source from the real provider
schema (`terraform providers schema -json`). The published package keeps that TypeScript
in each `lib/<name>/index.js` source map. From it we recover, for every attribute:

  * its name, and whether it is required / optional / computed (the generator writes
    `// <name> - computed: X, optional: Y, required: Z` above each one);
  * its type (the `*ToHclTerraform` functions give the input types, block-vs-attribute and
    list-vs-set; getters such as `getNumberAttribute` give the types of computed-only ones);
  * nested blocks and nested object types, recursively.

The result is written as JSON in the shape of Terraform's plugin-protocol `Schema` and served
by `provider.py`. Usage: extract_schema.py <package/lib> <out.json>
"""
import base64
import json
import os
import re
import sys

FLAGS = re.compile(r"//\s*(\w+) - computed: (true|false), optional: (true|false), required: (true|false)\n(.*)\n(.*)\n(.*)")
HCL_FN = re.compile(r"export function (\w+)ToHclTerraform\(")
HCL_ENTRY = re.compile(
    r"(\w+): \{\s*value: (.*?),\s*isBlock: (true|false),\s*type: \"(\w+)\",\s*storageClassType: \"(\w+)\",\s*\}",
    re.S,
)
CLASS = re.compile(r"export class (\w+) extends ([\w.]+) \{")
RESOURCE_TYPE = re.compile(r"public static readonly tfResourceType = \"(\w+)\"")

SIMPLE_INPUT = {
    ("simple", "string"): "string",
    ("simple", "number"): "number",
    ("simple", "boolean"): "bool",
    ("simple", "any"): "dynamic",
    ("list", "stringList"): ["list", "string"],
    ("set", "stringList"): ["set", "string"],
    ("list", "numberList"): ["list", "number"],
    ("set", "numberList"): ["set", "number"],
    ("map", "stringMap"): ["map", "string"],
    ("map", "numberMap"): ["map", "number"],
    ("map", "booleanMap"): ["map", "bool"],
    ("list", "stringListList"): ["list", ["list", "string"]],
    ("set", "stringListList"): ["set", ["list", "string"]],
    ("map", "stringMapMap"): ["map", ["map", "string"]],
    ("list", "stringMapList"): ["list", ["map", "string"]],
    ("set", "stringMapList"): ["set", ["map", "string"]],
    ("map", "any"): ["map", "dynamic"],
    ("list", "any"): ["list", "dynamic"],
}

GETTER_TYPES = [
    (r"asNumberList\(cdktf\.Fn\.tolist\(this\.getNumberListAttribute", ["set", "number"]),
    (r"cdktf\.Fn\.tolist\(this\.getListAttribute", ["set", "string"]),
    (r"this\.getStringAttribute", "string"),
    (r"this\.getNumberAttribute", "number"),
    (r"this\.getBooleanAttribute", "bool"),
    (r"this\.getStringMapAttribute", ["map", "string"]),
    (r"this\.getNumberMapAttribute", ["map", "number"]),
    (r"this\.getBooleanMapAttribute", ["map", "bool"]),
    (r"this\.getListAttribute", ["list", "string"]),
    (r"this\.getNumberListAttribute", ["list", "number"]),
    (r"interpolationForAttribute", "dynamic"),
]
CDKTF_MAPS = {"StringMap": ["map", "string"], "NumberMap": ["map", "number"], "BooleanMap": ["map", "bool"]}


class Source:
    """All TypeScript sources of the package, indexed by class and HCL-function name."""

    def __init__(self, lib):
        self.classes = {}  # class name -> (base, body)
        self.hcl = {}  # struct fn prefix -> {attr: (value, isBlock, type, storageClassType)}
        self.top = []  # (kind, tf type, class name)
        for d in sorted(os.listdir(lib)):
            path = os.path.join(lib, d, "index.js")
            if not os.path.exists(path):
                continue
            with open(path) as f:
                js = f.read()
            m = re.search(r"sourceMappingURL=data:application/json;base64,(\S+)", js)
            ts = json.loads(base64.b64decode(m.group(1)))["sourcesContent"][0]
            self._index(ts)

    def _index(self, ts):
        for m in HCL_FN.finditer(ts):
            end = ts.find("\n}\n", m.end())
            self.hcl[m.group(1)] = self._entries(ts[m.end():end])
        starts = [(m.start(), m) for m in CLASS.finditer(ts)]
        for i, (pos, m) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else len(ts)
            body = ts[pos:end]
            name, base = m.group(1), m.group(2)
            self.classes[name] = (base, body)
            if base in ("cdktf.TerraformResource", "cdktf.TerraformDataSource"):
                rt = RESOURCE_TYPE.search(body)
                kind = "resource" if base.endswith("Resource") else "data_source"
                self.top.append((kind, rt.group(1), name))
            elif base == "cdktf.TerraformProvider":
                self.top.append(("provider", "aws", name))

    @staticmethod
    def _entries(text):
        out = {}
        for e in HCL_ENTRY.finditer(text):
            out[e.group(1)] = (e.group(2), e.group(3) == "true", e.group(4), e.group(5))
        return out

    def class_hcl(self, cls):
        """The HCL entries of a top-level class (its synthesizeHclAttributes)."""
        body = self.classes[cls][1]
        i = body.find("synthesizeHclAttributes()")
        return self._entries(body[i:]) if i >= 0 else {}


def nested_fn(value):
    """The generated struct function a complex value is mapped with; None for primitives
    (those are mapped with cdktf's own `cdktf.stringToHclTerraform` and friends)."""
    for cdktf_prefix, name in re.findall(r"(cdktf\.)?(\w+)ToHclTerraform\b", value):
        if not cdktf_prefix:
            return name
    return None


class Builder:
    def __init__(self, src):
        self.src = src

    def flags(self, cls):
        """name -> (computed, optional, required, declaration line, getter lines) for a class."""
        out = {}
        if cls not in self.src.classes:
            return out
        for m in FLAGS.finditer(self.src.classes[cls][1]):
            out[m.group(1)] = (m.group(2) == "true", m.group(3) == "true", m.group(4) == "true",
                               m.group(5) + "\n" + m.group(6) + "\n" + m.group(7))
        return out

    def getter_type(self, decl):
        m = re.search(r"new cdktf\.(\w+)\(", decl)
        if m and m.group(1) in CDKTF_MAPS:
            return CDKTF_MAPS[m.group(1)]
        m = re.search(r"new (\w+)(List|OutputReference|Map)\(this, \"\w+\"(?:, (true|false))?\)", decl)
        if m:
            struct, kind, is_set = m.group(1), m.group(2), m.group(3) == "true"
            obj = self.object_type(struct)
            if kind == "OutputReference":
                return ["list", obj]
            if kind == "Map":
                return ["map", obj]
            return ["set" if is_set else "list", obj]
        for pat, ty in GETTER_TYPES:
            if re.search(pat, decl):
                return ty
        return "dynamic"

    def object_type(self, struct):
        attrs = {}
        for name, (_, _, _, decl) in self.flags(struct + "OutputReference").items():
            attrs[name] = self.getter_type(decl)
        return ["object", attrs]

    def block(self, flags_cls, hcl):
        """Build a plugin-protocol block from a class's flags and its HCL input entries."""
        flags = self.flags(flags_cls)
        attributes, blocks = [], []
        for name in sorted(set(flags) | set(hcl)):
            computed, optional, required, decl = flags.get(name, (False, True, False, ""))
            if name in hcl:
                value, is_block, ty, storage = hcl[name]
                fn = nested_fn(value)
                if fn is not None:
                    struct = fn[0].upper() + fn[1:]
                    inner = self.block(struct + "OutputReference", self.src.hcl.get(fn, {}))
                    if ty == "struct" or "OutputReference(" in decl:
                        nesting, max_items = "LIST", 1
                    else:
                        nesting, max_items = ty.upper(), 0
                    if nesting == "SET" and any(a.get("type") == "dynamic" for a in inner["attributes"]):
                        # cdktf could not type a recursive attribute (wafv2 `statement`); Terraform
                        # forbids dynamic attributes in set blocks, so serve the block as a list.
                        nesting = "LIST"
                    if is_block:
                        bounded = nesting in ("LIST", "SET")  # Terraform allows item bounds only there
                        blocks.append({"type_name": name, "nesting": nesting, "block": inner,
                                       "min_items": 1 if required and bounded else 0,
                                       "max_items": max_items if bounded else 0})
                    else:
                        attributes.append({"name": name, "nested_type": {"attributes": inner["attributes"],
                                                                         "nesting": "SINGLE" if max_items == 1 and ty == "struct" else nesting},
                                           "required": required, "optional": optional or not required,
                                           "computed": computed})
                    continue
                cty = SIMPLE_INPUT.get((ty, storage))
                if cty is None:
                    raise SystemExit(f"unknown input type {ty}/{storage} for {flags_cls}.{name}")
            else:
                cty = self.getter_type(decl)
            if name == "id":
                required, optional, computed = False, True, True
            attributes.append({"name": name, "type": cty, "required": required,
                               "optional": (optional or not (required or computed)) and not required,
                               "computed": computed})
        return {"attributes": attributes, "block_types": blocks}


def main():
    lib, out = sys.argv[1], sys.argv[2]
    src = Source(lib)
    b = Builder(src)
    schema = {"provider": None, "resource_schemas": {}, "data_source_schemas": {}}
    for kind, tf_type, cls in src.top:
        block = b.block(cls, src.class_hcl(cls))
        if kind == "provider":
            for a in block["attributes"]:
                a.update(required=False, optional=True, computed=False)
            schema["provider"] = block
        elif kind == "resource":
            schema["resource_schemas"][tf_type] = block
        else:
            schema["data_source_schemas"][tf_type] = block
    with open(out, "w") as f:
        json.dump(schema, f, sort_keys=True, separators=(",", ":"))
    print(f"{len(schema['resource_schemas'])} resources, {len(schema['data_source_schemas'])} data sources -> {out}")


if __name__ == "__main__":
    main()
