#include "shim.h"

uint16_t jasper_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_rx_burst(port, queue, pkts, n);
}
uint16_t jasper_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_tx_burst(port, queue, pkts, n);
}
struct rte_mbuf *jasper_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
int jasper_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n) {
    return rte_pktmbuf_alloc_bulk(mp, mbufs, n);
}
void jasper_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
char *jasper_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
char *jasper_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
int jasper_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail) { return rte_pktmbuf_chain(head, tail); }
uint16_t jasper_mbuf_refcnt(const struct rte_mbuf *m) { return rte_mbuf_refcnt_read(m); }
uint16_t jasper_mbuf_refcnt_update(struct rte_mbuf *m, int16_t v) { return rte_mbuf_refcnt_update(m, v); }
int jasper_errno(void) { return rte_errno; }
uint64_t jasper_rdtsc(void) { return rte_rdtsc(); }
