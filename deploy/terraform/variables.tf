variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "availability_zone" {
  description = "One availability zone: a cluster placement group lives in one."
  type        = string
  default     = "us-east-1a"
}

variable "vpc_cidr" {
  description = "The VPC's address range."
  type        = string
  default     = "10.0.0.0/16"
}

variable "data_cidr" {
  description = "Data subnet: the nodes' plan addresses (inventory `addr`)."
  type        = string
  default     = "10.0.0.0/18"
}

variable "mgmt_cidr" {
  description = "Management subnet: ssh, apt, metrics; the DPDK nodes' first interface."
  type        = string
  default     = "10.0.100.0/22"
}

variable "admin_cidrs" {
  description = "Who may ssh to the nodes (Ansible)."
  type        = list(string)
}

variable "monitoring_cidrs" {
  description = "Who may scrape the nodes' metrics port."
  type        = list(string)
  default     = []
}

variable "data_port" {
  description = "UDP port of every node's plan address (inventory `addr` port)."
  type        = number
  default     = 7000
}

variable "metrics_port" {
  description = "TCP port of each node's metrics endpoint ([metrics] listen)."
  type        = number
  default     = 9464
}

variable "key_name" {
  description = "EC2 key pair for ssh."
  type        = string
}

variable "instance_type" {
  description = "Instance type of kernel-UDP nodes."
  type        = string
  default     = "c6in.xlarge"
}

variable "dpdk_instance_type" {
  description = "Instance type of DPDK nodes (ENA, two interfaces)."
  type        = string
  default     = "c6in.2xlarge"
}

variable "nodes" {
  description = <<-EOT
    The machines, in inventory order (the first proxy is the root). Each has
    its plan address (data_ip) and, for DPDK nodes, a management address
    (mgmt_ip) on the first interface while data_ip sits on a second ENA
    interface that DPDK takes over. Kernel nodes have one interface, in the
    data subnet.
  EOT
  type = list(object({
    name    = string
    role    = string
    data_ip = string
    mgmt_ip = optional(string)
    dpdk    = optional(bool, false)
    lcores  = optional(string, "1")
  }))
  validation {
    condition     = alltrue([for n in var.nodes : contains(["sender", "proxy", "receiver"], n.role)])
    error_message = "Each node's role is sender, proxy or receiver."
  }
  validation {
    condition     = alltrue([for n in var.nodes : !n.dpdk || n.mgmt_ip != null])
    error_message = "A DPDK node needs mgmt_ip: its data_ip is on the interface DPDK takes from the kernel."
  }
  validation {
    condition     = length([for n in var.nodes : n if n.role == "sender"]) == 1
    error_message = "Exactly one node has role sender."
  }
}
