# terraform plan -var-file=example.tfvars: the tree of deploy/inventory.example.toml
# with DPDK proxies (two interfaces) and kernel-UDP receivers.
admin_cidrs = ["203.0.113.0/24"]
key_name    = "jasper"
nodes = [
  { name = "exchange-pub", role = "sender", data_ip = "10.0.0.10" },
  { name = "proxy-root", role = "proxy", data_ip = "10.0.1.1", mgmt_ip = "10.0.100.1", dpdk = true },
  { name = "proxy-a", role = "proxy", data_ip = "10.0.1.2", mgmt_ip = "10.0.100.2", dpdk = true },
  { name = "proxy-b", role = "proxy", data_ip = "10.0.1.3", mgmt_ip = "10.0.100.3", dpdk = true },
  { name = "mp-alpha", role = "receiver", data_ip = "10.0.2.1" },
  { name = "mp-beta", role = "receiver", data_ip = "10.0.2.2" },
  { name = "mp-gamma", role = "receiver", data_ip = "10.0.2.3" },
  { name = "mp-delta", role = "receiver", data_ip = "10.0.2.4" },
]
