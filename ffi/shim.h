/* Wrappers for DPDK's static inline functions and macros (not reachable
 * through bindgen). Each costs one call (~2 ns): irrelevant per burst. */
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_lcore.h>
#include <rte_cycles.h>

uint16_t jasper_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t jasper_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *jasper_pktmbuf_alloc(struct rte_mempool *mp);
int jasper_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n);
void jasper_pktmbuf_free(struct rte_mbuf *m);
char *jasper_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
char *jasper_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int jasper_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail);
uint16_t jasper_mbuf_refcnt(const struct rte_mbuf *m);
uint16_t jasper_mbuf_refcnt_update(struct rte_mbuf *m, int16_t v);
int jasper_errno(void);
uint64_t jasper_rdtsc(void);
