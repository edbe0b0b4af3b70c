# The inventory for `jasper plan`, from what was created: write it to a file
#   terraform output -raw jasper_inventory > inventory.toml
#   jasper plan --inventory inventory.toml --out plan/ [--backend dpdk]
# and deploy with ansible-playbook -i plan/hosts.yml deploy/ansible/site.yml.
# `host` is each machine's public address (Ansible over ssh from admin_cidrs).
# The second ENA interface usually appears at PCI 0000:00:06.0: check with
# `dpdk-devbind.py --status` on one DPDK node before planning.
output "jasper_inventory" {
  description = "Inventory TOML for jasper plan."
  value = templatefile("${path.module}/inventory.toml.tftpl", {
    data_port = var.data_port
    nodes = [for n in var.nodes : merge(n, {
      host = aws_instance.node[n.name].public_ip
    })]
  })
}

output "ssh_hosts" {
  description = "Public address of each node, for ssh."
  value       = { for k, i in aws_instance.node : k => i.public_ip }
}
