"""The VPC: private subnets for nodes, public subnets for the NAT gateway and internet-facing load balancers,
and small private subnets of their own for the metrics collector's network interfaces.

The subnets are placed in the availability zones where the configured Neuron instance types are offered.
Trainium is often offered in one or two zones of a region, rarely the first ones, so "the first three
zones" can leave Karpenter with nowhere to launch.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.config import ConfigError

MAX_ZONES = 3
# EKS does not place control planes in these zones (by zone ID), so cluster subnets must avoid them.
EKS_UNSUPPORTED_ZONE_IDS = frozenset({"use1-az3", "usw1-az2", "cac1-az3"})
DISCOVERY_TAG = "karpenter.sh/discovery"


def choose_availability_zones(offerings: Mapping[str, Sequence[str]], zones: Mapping[str, str]) -> list[str]:
    """Pick up to three zones, those offering the most configured Neuron types first.

    `offerings` maps each instance type to the zones offering it; `zones` maps the region's usable zone
    names to zone IDs. EKS needs subnets in two zones at least, so a region where Trainium is in a single
    zone gets one more zone for the control plane and system nodes.
    """
    usable = {name for name, zone_id in zones.items() if zone_id not in EKS_UNSUPPORTED_ZONE_IDS}
    score = {zone: sum(zone in offered for offered in offerings.values()) for zone in usable}
    neuron_zones = sorted((z for z in usable if score[z] > 0), key=lambda z: (-score[z], z))
    if not neuron_zones:
        types = ", ".join(offerings) or "none"
        raise ConfigError([f"neuron.instanceTypes: none of {types} is offered in any availability zone of this "
                           "region; pick another region (aws:region) or other instance types "
                           "(`python -m tools.preflight` lists where each type is offered)"])
    chosen = neuron_zones[:MAX_ZONES]
    for zone in sorted(usable - set(chosen)):
        if len(chosen) >= 2:
            break
        chosen.append(zone)
    return chosen


def lookup_availability_zones(instance_types: Sequence[str]) -> list[str]:
    """Ask EC2 where the instance types are offered. Runs before any resource is registered."""
    zones = aws.get_availability_zones(state="available", filters=[
        aws.GetAvailabilityZonesFilterArgs(name="opt-in-status", values=["opt-in-not-required"]),
    ])
    offered = aws.ec2.get_instance_type_offerings(location_type="availability-zone", filters=[
        aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="instance-type", values=list(instance_types)),
    ])
    offerings: dict[str, list[str]] = {t: [] for t in instance_types}
    for instance_type, location in zip(offered.instance_types, offered.locations):
        offerings.setdefault(instance_type, []).append(location)
    return choose_availability_zones(offerings, dict(zip(zones.names, zones.zone_ids)))


@dataclass
class NetworkArgs:
    cluster_name: str
    availability_zones: Sequence[str]
    cidr_block: str = "10.0.0.0/16"


class Network(pulumi.ComponentResource):
    """A VPC across the chosen zones: a private, a public and a collector subnet per zone, one NAT gateway."""

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainium-vllm:index:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        private_cidrs, public_cidrs, collector_cidrs = _subnet_cidrs(args.cidr_block, len(args.availability_zones))

        self.vpc = aws.ec2.Vpc(f"{name}-vpc", aws.ec2.VpcArgs(
            cidr_block=args.cidr_block,
            enable_dns_hostnames=True,  # EKS nodes register by their private DNS names
            enable_dns_support=True,
            tags={"Name": f"{args.cluster_name}"},
        ), child)
        gateway = aws.ec2.InternetGateway(f"{name}-igw", aws.ec2.InternetGatewayArgs(
            vpc_id=self.vpc.id, tags={"Name": f"{args.cluster_name}"},
        ), child)

        public_routes = aws.ec2.RouteTable(f"{name}-public", aws.ec2.RouteTableArgs(
            vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=gateway.id)],
            tags={"Name": f"{args.cluster_name}-public"},
        ), child)

        self.public_subnets: list[aws.ec2.Subnet] = []
        self.private_subnets: list[aws.ec2.Subnet] = []
        for zone, cidr in zip(args.availability_zones, public_cidrs):
            subnet = aws.ec2.Subnet(f"{name}-public-{zone}", aws.ec2.SubnetArgs(
                vpc_id=self.vpc.id,
                availability_zone=zone,
                cidr_block=cidr,
                map_public_ip_on_launch=False,  # nothing here needs a public IP but the NAT's own EIP
                tags={"Name": f"{args.cluster_name}-public-{zone}", "kubernetes.io/role/elb": "1"},
            ), child)
            aws.ec2.RouteTableAssociation(f"{name}-public-{zone}", aws.ec2.RouteTableAssociationArgs(
                subnet_id=subnet.id, route_table_id=public_routes.id,
            ), child)
            self.public_subnets.append(subnet)

        # One NAT gateway: the nodes' egress (image pulls, model downloads) is bursty and cheap next to
        # a Trainium node; a zone outage takes the Neuron capacity of that zone down anyway.
        nat_ip = aws.ec2.Eip(f"{name}-nat", aws.ec2.EipArgs(
            domain="vpc", tags={"Name": f"{args.cluster_name}-nat"},
        ), child)
        nat = aws.ec2.NatGateway(f"{name}-nat", aws.ec2.NatGatewayArgs(
            subnet_id=self.public_subnets[0].id,
            allocation_id=nat_ip.id,
            tags={"Name": f"{args.cluster_name}-nat"},
        ), pulumi.ResourceOptions(parent=self, depends_on=[gateway]))
        private_routes = aws.ec2.RouteTable(f"{name}-private", aws.ec2.RouteTableArgs(
            vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
            tags={"Name": f"{args.cluster_name}-private"},
        ), child)

        for zone, cidr in zip(args.availability_zones, private_cidrs):
            subnet = aws.ec2.Subnet(f"{name}-private-{zone}", aws.ec2.SubnetArgs(
                vpc_id=self.vpc.id,
                availability_zone=zone,
                cidr_block=cidr,
                tags={
                    "Name": f"{args.cluster_name}-private-{zone}",
                    "kubernetes.io/role/internal-elb": "1",
                    # Karpenter launches nodes into the subnets carrying this tag.
                    DISCOVERY_TAG: args.cluster_name,
                },
            ), child)
            aws.ec2.RouteTableAssociation(f"{name}-private-{zone}", aws.ec2.RouteTableAssociationArgs(
                subnet_id=subnet.id, route_table_id=private_routes.id,
            ), child)
            self.private_subnets.append(subnet)

        # The Amazon Managed Service for Prometheus collector reaches the pods from interfaces in the subnets
        # it is given. Model pods share the node subnets, so those could not tell it from any other pod;
        # subnets of its own let NetworkPolicies admit exactly the collector.
        self.collector_subnets: list[aws.ec2.Subnet] = []
        for zone, cidr in zip(args.availability_zones, collector_cidrs):
            subnet = aws.ec2.Subnet(f"{name}-collector-{zone}", aws.ec2.SubnetArgs(
                vpc_id=self.vpc.id, availability_zone=zone, cidr_block=cidr,
                tags={"Name": f"{args.cluster_name}-collector-{zone}"},
            ), child)
            aws.ec2.RouteTableAssociation(f"{name}-collector-{zone}", aws.ec2.RouteTableAssociationArgs(
                subnet_id=subnet.id, route_table_id=private_routes.id,
            ), child)
            self.collector_subnets.append(subnet)

        self.vpc_id = self.vpc.id
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in self.private_subnets])
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in self.public_subnets])
        self.collector_subnet_ids = pulumi.Output.all(*[s.id for s in self.collector_subnets])
        self.collector_cidr_blocks = list(collector_cidrs)
        self.private_route_table_ids = pulumi.Output.all(private_routes.id)
        self.availability_zones = list(args.availability_zones)
        self.register_outputs({
            "vpcId": self.vpc_id,
            "privateSubnetIds": self.private_subnet_ids,
            "publicSubnetIds": self.public_subnet_ids,
            "collectorSubnetIds": self.collector_subnet_ids,
            "availabilityZones": self.availability_zones,
        })


def _subnet_cidrs(cidr_block: str, zones: int) -> tuple[list[str], list[str], list[str]]:
    """Private subnets get a quarter of the VPC each (pods take VPC addresses); public ones share the last quarter
    with the collector's, which take a sixteenth of its last sixteenth each (a /26 in a /20 VPC: the collector
    needs one address per zone)."""
    vpc = ipaddress.IPv4Network(cidr_block)
    quarters = list(vpc.subnets(prefixlen_diff=2))
    public = list(quarters[3].subnets(prefixlen_diff=2))
    collector = list(public[3].subnets(prefixlen_diff=2))
    return [str(q) for q in quarters[:zones]], [str(p) for p in public[:zones]], [str(c) for c in collector[:zones]]
