# A starting point for a Jasper tree on AWS: one VPC, a data subnet and a
# management subnet in one availability zone, a cluster placement group,
# one instance per node (DPDK nodes get a second ENA interface for data),
# security groups that admit data only from the tree's own machines.
# It has not been applied (see README.md).

locals {
  nodes = { for n in var.nodes : n.name => n }
  dpdk  = { for k, n in local.nodes : k => n if n.dpdk }
}

data "aws_ami" "debian12" {
  most_recent = true
  owners      = ["136693071363"] # Debian
  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }
}

resource "aws_vpc" "jasper" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = { Name = "jasper" }
}

resource "aws_internet_gateway" "jasper" {
  vpc_id = aws_vpc.jasper.id
  tags   = { Name = "jasper" }
}

resource "aws_subnet" "data" {
  vpc_id                  = aws_vpc.jasper.id
  cidr_block              = var.data_cidr
  availability_zone       = var.availability_zone
  map_public_ip_on_launch = true
  tags                    = { Name = "jasper-data" }
}

resource "aws_subnet" "mgmt" {
  vpc_id                  = aws_vpc.jasper.id
  cidr_block              = var.mgmt_cidr
  availability_zone       = var.availability_zone
  map_public_ip_on_launch = true
  tags                    = { Name = "jasper-mgmt" }
}

resource "aws_route_table" "jasper" {
  vpc_id = aws_vpc.jasper.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.jasper.id
  }
  tags = { Name = "jasper" }
}

resource "aws_route_table_association" "data" {
  subnet_id      = aws_subnet.data.id
  route_table_id = aws_route_table.jasper.id
}

resource "aws_route_table_association" "mgmt" {
  subnet_id      = aws_subnet.mgmt.id
  route_table_id = aws_route_table.jasper.id
}

resource "aws_placement_group" "jasper" {
  name     = "jasper"
  strategy = "cluster"
}

# Data: UDP on the data port, only from machines of the tree (this group).
# Each node's guard narrows that further to its own plan peers.
resource "aws_security_group" "data" {
  name        = "jasper-data"
  description = "Jasper data plane: plan members only"
  vpc_id      = aws_vpc.jasper.id
  tags        = { Name = "jasper-data" }
}

resource "aws_vpc_security_group_ingress_rule" "data_from_tree" {
  security_group_id            = aws_security_group.data.id
  referenced_security_group_id = aws_security_group.data.id
  ip_protocol                  = "udp"
  from_port                    = var.data_port
  to_port                      = var.data_port
  description                  = "Jasper data and delay reports between plan members"
}

resource "aws_vpc_security_group_egress_rule" "data_to_tree" {
  security_group_id            = aws_security_group.data.id
  referenced_security_group_id = aws_security_group.data.id
  ip_protocol                  = "udp"
  from_port                    = var.data_port
  to_port                      = var.data_port
  description                  = "Jasper data and delay reports between plan members"
}

# Management: ssh from the admins, metrics from monitoring, anything out
# (apt, the time service is link-local and needs no rule).
resource "aws_security_group" "mgmt" {
  name        = "jasper-mgmt"
  description = "Jasper management: ssh, metrics, updates"
  vpc_id      = aws_vpc.jasper.id
  tags        = { Name = "jasper-mgmt" }
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each          = toset(var.admin_cidrs)
  security_group_id = aws_security_group.mgmt.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  description       = "ssh (Ansible)"
}

resource "aws_vpc_security_group_ingress_rule" "metrics" {
  for_each          = toset(var.monitoring_cidrs)
  security_group_id = aws_security_group.mgmt.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.metrics_port
  to_port           = var.metrics_port
  description       = "Prometheus scrapes"
}

resource "aws_vpc_security_group_egress_rule" "mgmt_out" {
  security_group_id = aws_security_group.mgmt.id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
  description       = "Updates and packages"
}

# DPDK nodes: the data address on a second ENA interface.
resource "aws_network_interface" "data" {
  for_each        = local.dpdk
  subnet_id       = aws_subnet.data.id
  private_ips     = [each.value.data_ip]
  security_groups = [aws_security_group.data.id]
  # DPDK answers ARP for its own address; the VPC checks the source.
  source_dest_check = true
  tags              = { Name = "jasper-${each.key}-data" }
}

resource "aws_instance" "node" {
  for_each          = local.nodes
  ami               = data.aws_ami.debian12.id
  instance_type     = each.value.dpdk ? var.dpdk_instance_type : var.instance_type
  key_name          = var.key_name
  placement_group   = aws_placement_group.jasper.id
  availability_zone = var.availability_zone

  # Kernel nodes: one interface, in the data subnet, with both groups.
  # DPDK nodes: the first interface is management only.
  subnet_id              = each.value.dpdk ? aws_subnet.mgmt.id : aws_subnet.data.id
  private_ip             = each.value.dpdk ? each.value.mgmt_ip : each.value.data_ip
  vpc_security_group_ids = each.value.dpdk ? [aws_security_group.mgmt.id] : [aws_security_group.mgmt.id, aws_security_group.data.id]

  metadata_options {
    http_tokens = "required"
  }
  root_block_device {
    volume_size = 16
    encrypted   = true
  }
  tags = { Name = "jasper-${each.key}", JasperRole = each.value.role }
}

resource "aws_network_interface_attachment" "data" {
  for_each             = local.dpdk
  instance_id          = aws_instance.node[each.key].id
  network_interface_id = aws_network_interface.data[each.key].id
  device_index         = 1
}
