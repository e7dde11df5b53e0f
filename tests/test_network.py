"""The VPC: subnets where the Neuron instance types are offered, tagged for Karpenter and load balancers."""

from __future__ import annotations

import ipaddress

import pytest

from components.config import ConfigError
from components.network import choose_availability_zones
from tests.conftest import with_settings
from tools.offline import ZONES, Deployment, run_program

SUBNET = "aws:ec2/subnet:Subnet"


def _subnets(deployment, kind):
    return [s for s in deployment.of_type(SUBNET) if f"-{kind}-" in s.name]


def _zones(deployment, kind):
    return sorted(s.inputs["availabilityZone"] for s in _subnets(deployment, kind))


def test_subnets_span_the_zones_where_trainium_is_offered(dev_deployment):
    # us-west-2: trn1.2xlarge only in 2b and 2d, inf2.xlarge in all four; the Trainium zones come first.
    assert _zones(dev_deployment, "private") == ["us-west-2a", "us-west-2b", "us-west-2d"]
    assert _zones(dev_deployment, "public") == ["us-west-2a", "us-west-2b", "us-west-2d"]
    assert dev_deployment.exports["availabilityZones"] == ["us-west-2b", "us-west-2d", "us-west-2a"]


def test_single_trainium_zone_gets_a_second_zone_for_the_control_plane(dev_config):
    config = with_settings(dev_config, neuron={"instanceTypes": ["trn1.2xlarge"], "maxNeuronDevices": 2})
    config["aws:region"] = "us-east-2"  # trn1.2xlarge is offered in us-east-2c only
    deployment = run_program(config)
    assert _zones(deployment, "private") == ["us-east-2a", "us-east-2c"]
    assert deployment.exports["availabilityZones"] == ["us-east-2c", "us-east-2a"]


def test_zones_eks_cannot_use_are_skipped(dev_config):
    config = with_settings(dev_config, neuron={"instanceTypes": ["trn1n.32xlarge"], "maxNeuronDevices": 16},
                           vllm={"models": [{"name": "big", "neuronDevices": 16, "tensorParallelSize": 32}]})
    config["aws:region"] = "us-east-1"
    deployment = run_program(config)
    # trn1n.32xlarge is in us-east-1c only; the second zone is the first usable one, never us-east-1e.
    assert deployment.exports["availabilityZones"] == ["us-east-1c", "us-east-1a"]
    assert _zones(deployment, "private") == ["us-east-1a", "us-east-1c"]


def test_choose_availability_zones_never_picks_an_eks_unsupported_zone():
    zones = ZONES["us-east-1"]
    chosen = choose_availability_zones({"x": ["us-east-1e", "us-east-1f"]}, zones)
    assert chosen == ["us-east-1f", "us-east-1a"]


def test_region_without_the_instance_types_fails_before_anything_is_registered(dev_config):
    config = with_settings(dev_config, neuron={"instanceTypes": ["trn1.2xlarge"], "maxNeuronDevices": 2})
    config["aws:region"] = "eu-west-1"  # no Trainium there
    deployment = Deployment()
    with pytest.raises(ConfigError, match="none of trn1.2xlarge is offered in any availability zone"):
        run_program(config, deployment=deployment)
    assert deployment.resources == []


def test_private_subnets_are_tagged_for_karpenter_and_internal_load_balancers(dev_deployment):
    for subnet in _subnets(dev_deployment, "private"):
        assert subnet.inputs["tags"]["karpenter.sh/discovery"] == "trainium-vllm-dev"
        assert subnet.inputs["tags"]["kubernetes.io/role/internal-elb"] == "1"
        assert not subnet.inputs.get("mapPublicIpOnLaunch")


def test_public_subnets_are_for_load_balancers_and_nat_only(dev_deployment):
    for subnet in _subnets(dev_deployment, "public"):
        assert subnet.inputs["tags"]["kubernetes.io/role/elb"] == "1"
        assert "karpenter.sh/discovery" not in subnet.inputs["tags"]  # nodes never land in public subnets
        assert subnet.inputs["mapPublicIpOnLaunch"] is False


def test_private_subnets_route_to_the_internet_through_the_nat_gateway(dev_deployment):
    nat = dev_deployment.one("aws:ec2/natGateway:NatGateway")
    public_ids = [s.outputs["id"] for s in _subnets(dev_deployment, "public")]
    assert nat.inputs["subnetId"] in public_ids
    private_routes = dev_deployment.one("aws:ec2/routeTable:RouteTable", "trainium-vllm-dev-private")
    assert private_routes.inputs["routes"] == [{"cidrBlock": "0.0.0.0/0", "natGatewayId": nat.outputs["id"]}]
    associated = {a.inputs["subnetId"] for a in dev_deployment.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
                  if a.inputs["routeTableId"] == private_routes.outputs["id"]}
    assert associated == {s.outputs["id"] for s in _subnets(dev_deployment, "private") + _subnets(dev_deployment, "collector")}


def test_subnet_ranges_fit_the_vpc_and_do_not_overlap(dev_deployment):
    vpc = ipaddress.IPv4Network(dev_deployment.one("aws:ec2/vpc:Vpc").inputs["cidrBlock"])
    ranges = [ipaddress.IPv4Network(s.inputs["cidrBlock"]) for s in dev_deployment.of_type(SUBNET)]
    assert all(r.subnet_of(vpc) for r in ranges)
    assert not any(a.overlaps(b) for i, a in enumerate(ranges) for b in ranges[i + 1:])
    # A quarter of the VPC per private subnet: pods take VPC addresses.
    assert {ipaddress.IPv4Network(s.inputs["cidrBlock"]).prefixlen for s in _subnets(dev_deployment, "private")} == {18}


def test_the_metrics_collector_gets_subnets_of_its_own_in_every_zone(dev_deployment, deploy):
    collector = _subnets(dev_deployment, "collector")
    assert sorted(s.inputs["availabilityZone"] for s in collector) == \
        sorted(s.inputs["availabilityZone"] for s in _subnets(dev_deployment, "private"))
    # Nothing else launches there: no Karpenter discovery tag, and no node subnet overlaps them.
    assert all("karpenter.sh/discovery" not in s.inputs["tags"] for s in collector)
    small = deploy(vpcCidr="10.20.0.0/20")
    ranges = sorted(s.inputs["cidrBlock"] for s in _subnets(small, "collector"))
    assert ranges == ["10.20.15.0/26", "10.20.15.128/26", "10.20.15.64/26"]
