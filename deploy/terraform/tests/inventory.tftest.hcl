# Offline test (no AWS account): a mocked provider, the example tree, and
# the inventory output checked line by line.
mock_provider "aws" {
  mock_data "aws_ami" {
    defaults = { id = "ami-0123456789abcdef0" }
  }
  mock_resource "aws_instance" {
    defaults = { public_ip = "198.51.100.7" }
  }
}

variables {
  admin_cidrs = ["203.0.113.0/24"]
  key_name    = "jasper"
  nodes = [
    { name = "exchange-pub", role = "sender", data_ip = "10.0.0.10" },
    { name = "proxy-root", role = "proxy", data_ip = "10.0.1.1", mgmt_ip = "10.0.100.1", dpdk = true },
    { name = "mp-alpha", role = "receiver", data_ip = "10.0.2.1" },
  ]
}

run "inventory_lists_every_node_in_order" {
  command = apply
  assert {
    condition     = length(regexall("(?m)^\\[sender\\]$", output.jasper_inventory)) == 1
    error_message = "one [sender] table"
  }
  assert {
    condition     = strcontains(output.jasper_inventory, "[[proxy]]\nname = \"proxy-root\"\naddr = \"10.0.1.1:7000\"\nhost = \"198.51.100.7\"\ndpdk = { lcores = \"1\", pci = \"0000:00:06.0\" }")
    error_message = "the DPDK proxy with its data address, host and dpdk settings"
  }
  assert {
    condition     = strcontains(output.jasper_inventory, "[[receiver]]\nname = \"mp-alpha\"\naddr = \"10.0.2.1:7000\"\nhost = \"198.51.100.7\"\n\n")
    error_message = "a kernel receiver has no dpdk line"
  }
  assert {
    condition     = length(aws_network_interface.data) == 1 && aws_instance.node["proxy-root"].private_ip == "10.0.100.1"
    error_message = "only the DPDK node gets a data interface; its first one is management"
  }
}

run "a_dpdk_node_needs_a_management_address" {
  command = plan
  variables {
    nodes = [
      { name = "exchange-pub", role = "sender", data_ip = "10.0.0.10" },
      { name = "proxy-root", role = "proxy", data_ip = "10.0.1.1", dpdk = true },
    ]
  }
  expect_failures = [var.nodes]
}
