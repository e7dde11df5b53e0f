"""Karpenter's CEL rules (x-kubernetes-validations in the 1.14.1 CRDs) on every NodePool and EC2NodeClass the
stacks deploy, evaluated with tests/cel_rules.py; negative controls break specific rules.

jsonschema (tests/schemas.py) checks the rest of the CRD schema; these rules are what it cannot see: mutual
exclusions, restricted labels and tags, alias formats. The API server rejects an object that breaks one, so
`pulumi up` would fail half-way.
"""

from __future__ import annotations

import copy

import pytest

from tests import cel_rules, stacks
from tests.cel_rules import Rule, find, split, validate
from tests.schemas import CRD_FILES, KARPENTER_SCHEMAS, crd_schema, custom_resource_problems

NODE_POOL = ("karpenter.sh/v1", "NodePool")
NODE_CLASS = ("karpenter.k8s.aws/v1", "EC2NodeClass")
KINDS = (NODE_POOL, NODE_CLASS)


def schema(kind: tuple[str, str]) -> dict:
    return crd_schema(*kind)


def karpenter_objects(stack: str) -> list[dict]:
    deployment = stacks.deployment(stack)
    return [m for m in (r.manifest() for r in deployment.kubernetes_objects())
            if (m["apiVersion"], m["kind"]) in KINDS]


def messages(obj: dict, old: dict | None = None, **kwargs) -> list[str]:
    return validate(obj, schema((obj["apiVersion"], obj["kind"])), old, **kwargs).messages()


# --- the rules ----------------------------------------------------------------------------------------------

def test_every_rule_of_both_crds_is_found():
    import yaml

    sites = {kind: cel_rules.schema_rules(schema(kind)) for kind in KINDS}
    for kind, rules in sites.items():
        crd = yaml.safe_load((KARPENTER_SCHEMAS / CRD_FILES[kind]).read_text())
        (served,) = [v for v in crd["spec"]["versions"] if v["name"] == kind[0].split("/")[1]]
        assert len(rules) == cel_rules.count_validation_lists(served["schema"]), kind
    # FACTS section 7: 63 rules, counted as distinct expressions per CRD (45 EC2NodeClass + 18 NodePool);
    # they sit at 74 places (54 + 20), and 3 of the NodePool's read oldSelf (transition rules).
    assert {k[1]: len({r.expression for r in rules}) for k, rules in sites.items()} == {"NodePool": 18,
                                                                                           "EC2NodeClass": 45}
    assert sum(len(rules) for rules in sites.values()) == 74
    assert [r.site for r in sites[NODE_POOL] if r.transition] == ["spec", "spec.template.spec.nodeClassRef",
                                                                  "spec.template.spec.nodeClassRef"]
    assert not any(r.transition for r in sites[NODE_CLASS])


def coverage_objects() -> list[dict]:
    """Valid objects that between them have a value at every node that carries a rule."""
    tags = {"team": "ml"}
    common = {"securityGroupSelectorTerms": [{"tags": tags}], "subnetSelectorTerms": [{"tags": tags}]}
    full = {"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass", "metadata": {"name": "full"}, "spec": {
        **common,
        "role": "KarpenterNodeRole",
        "amiSelectorTerms": [{"alias": "al2023@v20260714"}],
        "blockDeviceMappings": [{"deviceName": "/dev/xvda", "rootVolume": True, "ebs": {"volumeSize": "100Gi"}}],
        "capacityReservationSelectorTerms": [{"id": "cr-0123456789abcdef0"}, {"tags": tags}],
        "connectionTracking": {"tcpEstablishedTimeout": 3600},
        "kubelet": {"imageGCHighThresholdPercent": 85, "imageGCLowThresholdPercent": 80,
                    "evictionHard": {"memory.available": "5%"}, "evictionSoft": {"memory.available": "10%"},
                    "evictionSoftGracePeriod": {"memory.available": "1m"},
                    "kubeReserved": {"cpu": "100m"}, "systemReserved": {"memory": "100Mi"}},
        "networkInterfaces": [{"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "interface"}],
        "placementGroupSelector": {"name": "training"},
        "tags": tags,
    }}
    by_tags = {"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass", "metadata": {"name": "by-tags"},
               "spec": {**common, "instanceProfile": "KarpenterNodeProfile", "amiFamily": "AL2023",
                        "amiSelectorTerms": [{"tags": tags}]}}
    pool = copy.deepcopy(karpenter_objects("dev")[[m["kind"] for m in karpenter_objects("dev")].index("NodePool")])
    return [full, by_tags, pool]


def test_every_rule_evaluates_on_objects_that_reach_it():
    """FACTS: with `find` and `split` provided, all 63 rules evaluate (here also the transition rules, on an
    update of each object to itself)."""
    evaluated: set[tuple[str, Rule]] = set()
    for obj in coverage_objects():
        assert custom_resource_problems(obj) == [], obj["metadata"]["name"]
        report = validate(obj, schema((obj["apiVersion"], obj["kind"])), old=obj)
        assert report.messages() == [] and report.skipped == [], obj["metadata"]["name"]
        evaluated |= {(obj["kind"], r.rule) for r in report.results}
    assert len(evaluated) == 74
    assert len({(kind, rule.expression) for kind, rule in evaluated}) == 63


# --- the stacks' objects ------------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", stacks.STACKS)
def test_every_node_pool_and_node_class_passes_every_rule(stack):
    objects = karpenter_objects(stack)
    assert {o["kind"] for o in objects} == {"NodePool", "EC2NodeClass"}
    for obj in objects:
        name = f"{obj['kind']} {obj['metadata']['name']}"
        created = validate(obj, schema((obj["apiVersion"], obj["kind"])))
        assert created.messages() == [], name
        assert created.results, name
        # A create: the transition rules have no old object and are skipped (3 on a NodePool).
        assert len(created.skipped) == (3 if obj["kind"] == "NodePool" else 0), name
        updated = validate(obj, schema((obj["apiVersion"], obj["kind"])), old=obj)  # `pulumi up` again
        assert updated.messages() == [] and updated.skipped == [], name


@pytest.mark.parametrize("stack", stacks.STACKS)
def test_every_node_pool_refers_to_a_node_class_of_the_stack(stack):
    objects = karpenter_objects(stack)
    classes = {o["metadata"]["name"] for o in objects if o["kind"] == "EC2NodeClass"}
    for pool in (o for o in objects if o["kind"] == "NodePool"):
        reference = pool["spec"]["template"]["spec"]["nodeClassRef"]
        assert (reference["group"], reference["kind"]) == ("karpenter.k8s.aws", "EC2NodeClass")
        assert reference["name"] in classes


# --- negative controls ------------------------------------------------------------------------------------

def dev_object(kind: str) -> dict:
    return copy.deepcopy(next(o for o in karpenter_objects("dev") if o["kind"] == kind))


def test_a_node_class_with_both_role_and_instance_profile_is_rejected():
    node_class = dev_object("EC2NodeClass")
    node_class["spec"]["instanceProfile"] = "KarpenterNodeProfile"
    assert messages(node_class) == ["spec: must specify exactly one of ['role', 'instanceProfile']"]


def test_an_alias_term_cannot_be_combined_with_an_id_term():
    node_class = dev_object("EC2NodeClass")
    node_class["spec"]["amiSelectorTerms"].append({"id": "ami-0123456789abcdef0"})
    assert messages(node_class) == [
        "spec.amiSelectorTerms: 'alias' is mutually exclusive, cannot be set with a combination of other "
        "amiSelectorTerms"]
    node_class["spec"]["amiSelectorTerms"] = [{"alias": "al2023@v20260714", "id": "ami-0123456789abcdef0"}]
    assert messages(node_class) == [
        "spec.amiSelectorTerms: 'id' is mutually exclusive, cannot be set with a combination of other fields in "
        "amiSelectorTerms",
        "spec.amiSelectorTerms: 'alias' is mutually exclusive, cannot be set with a combination of other fields "
        "in amiSelectorTerms"]


@pytest.mark.parametrize("alias, message", [
    ("ubuntu@v20260714", "family is not supported, must be one of the following: 'al2', 'al2023', "
                         "'bottlerocket', 'windows2019', 'windows2022', 'windows2025'"),
    ("windows2022@v20260714", "windows families may only specify version 'latest'"),
])
def test_alias_families_and_versions_are_checked_with_split(alias, message):
    node_class = dev_object("EC2NodeClass")
    node_class["spec"]["amiSelectorTerms"] = [{"alias": alias}]
    assert messages(node_class) == [f"spec.amiSelectorTerms[0].alias: {message}"]


def test_an_al2_alias_needs_a_matching_ami_family_found_with_find():
    node_class = dev_object("EC2NodeClass")
    node_class["spec"]["amiFamily"] = "Bottlerocket"
    assert messages(node_class) == ["spec: if set, amiFamily must be 'AL2023' or 'Custom' when using an AL2023 alias"]


def test_restricted_tags_are_rejected():
    node_class = dev_object("EC2NodeClass")
    node_class["spec"]["tags"]["kubernetes.io/cluster/other"] = "owned"
    assert messages(node_class) == ["spec.tags: tag contains a restricted tag matching kubernetes.io/cluster/"]


@pytest.mark.parametrize("key, message", [
    ("kubernetes.io/hostname", 'label "kubernetes.io/hostname" is restricted'),
    ("karpenter.sh/nodepool", 'label "karpenter.sh/nodepool" is restricted'),
    ("karpenter.sh/custom", 'label domain "karpenter.sh" is restricted'),
    ("team.karpenter.k8s.aws/custom", 'label domain "karpenter.k8s.aws" is restricted'),
])
def test_a_requirement_on_a_restricted_label_is_rejected(key, message):
    pool = dev_object("NodePool")
    pool["spec"]["template"]["spec"]["requirements"].append({"key": key, "operator": "Exists"})
    index = len(pool["spec"]["template"]["spec"]["requirements"]) - 1
    found = messages(pool)
    assert f"spec.template.spec.requirements[{index}].key: {message}" in found
    assert all(m.startswith(f"spec.template.spec.requirements[{index}].key: ") for m in found)


def test_well_known_karpenter_labels_are_allowed():
    pool = dev_object("NodePool")
    pool["spec"]["template"]["spec"]["requirements"] += [
        {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["trn1"]},
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
    ]
    pool["spec"]["template"]["metadata"]["labels"]["example.com/team"] = "ml"
    assert messages(pool) == []


def test_a_template_label_in_a_restricted_domain_is_rejected():
    pool = dev_object("NodePool")
    pool["spec"]["template"]["metadata"]["labels"]["karpenter.k8s.aws/custom"] = "x"
    assert messages(pool) == ['spec.template.metadata.labels: label domain "karpenter.k8s.aws" is restricted']


def test_requirement_values_are_checked():
    pool = dev_object("NodePool")
    pool["spec"]["template"]["spec"]["requirements"] += [
        {"key": "example.com/empty", "operator": "In", "values": []},
        {"key": "karpenter.k8s.aws/instance-generation", "operator": "Gt", "values": ["-1"]},
    ]
    assert messages(pool) == [
        "spec.template.spec.requirements: requirements with operator 'In' must have a value defined",
        "spec.template.spec.requirements: requirements operator 'Gt', 'Lt', 'Gte', or 'Lte' must have a single "
        "positive integer value"]


def test_defaults_are_applied_before_the_rules():
    pool = dev_object("NodePool")
    del pool["spec"]["disruption"]
    report = validate(pool, schema(NODE_POOL))
    assert "spec.disruption.budgets" in {r.path for r in report.results}  # the defaulted [{nodes: 10%}]
    pool["spec"]["disruption"] = {"budgets": [{"nodes": "1", "schedule": "0 9 * * *"}]}
    assert messages(pool) == ["spec.disruption.budgets: 'schedule' must be set with 'duration'"]


def test_transition_rules_run_on_an_update_only():
    old = dev_object("NodePool")
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["nodeClassRef"]["kind"] = "OtherNodeClass"
    assert messages(new, old) == ["spec.template.spec.nodeClassRef: nodeClassRef.kind is immutable"]
    assert messages(new) == []  # a create: no oldSelf
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 2
    for static_forbids in ("limits", "weight"):
        new["spec"].pop(static_forbids, None)
    assert messages(new, old) == [
        "spec: Cannot transition NodePool between static (replicas set) and dynamic (replicas unset) "
        "provisioning modes"]


def test_a_rule_that_cannot_be_evaluated_fails():
    node_class = dev_object("EC2NodeClass")
    node_class["spec"]["kubelet"] = {"evictionSoft": {"memory.available": "10%"}}  # no evictionSoftGracePeriod
    (failure,) = validate(node_class, schema(NODE_CLASS)).failures
    assert failure.rule.message == "evictionSoft OwnerKey does not have a matching evictionSoftGracePeriod"
    assert failure.error


def test_without_the_kubernetes_functions_the_rules_that_use_them_cannot_run():
    report = validate(dev_object("EC2NodeClass"), schema(NODE_CLASS), functions={})
    failing = {r.rule.expression for r in report.failures}
    assert failing and all(".find(" in e or ".split(" in e for e in failing)
    assert all(r.error for r in report.failures)


# --- the extension functions, against their documented examples ------------------------------------------------

def test_find_returns_the_first_match_or_an_empty_string():
    assert find("abc 123", "[0-9]+") == "123"
    assert find("abc 123", "xyz") == ""
    assert find("karpenter.sh/nodepool", "^([^/]+)") == "karpenter.sh"
    assert find("example.com", "^([^/]+)") == "example.com"
    assert isinstance(find("abc", "("), cel_rules.CELEvalError)


@pytest.mark.parametrize("limit, parts", [
    (None, ["hello", "hello", "hello"]), (0, []), (1, ["hello hello hello"]), (2, ["hello", "hello hello"]),
    (-1, ["hello", "hello", "hello"]),
])
def test_split_follows_go_strings_split(limit, parts):
    args = ("hello hello hello", " ") if limit is None else ("hello hello hello", " ", limit)
    assert list(split(*args)) == parts


def test_split_edge_cases():
    assert list(split("al2023@v1@x", "@")) == ["al2023", "v1", "x"]
    assert list(split("", "@")) == [""]
    assert list(split("abc", "")) == ["a", "b", "c"]
    assert list(split("abc", "", 2)) == ["a", "bc"]
