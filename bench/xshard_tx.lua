-- Cross-shard write transactions for the twopc benchmark (bench/bench.py, suite twopc):
-- each transaction updates 4 random rows of sbtest1 (on the 2-shard keyspace most
-- transactions touch both shards) under the given transaction_mode. Ids are updated in
-- ascending order so transactions never deadlock one another.
sysbench.cmdline.options = {
  ["tx-mode"] = {"shardgate transaction_mode (multi or twopc)", "multi"},
  ["table-size"] = {"rows in sbtest1", 20000},
  ["rows-per-tx"] = {"rows updated per transaction", 4},
}

function thread_init()
  drv = sysbench.sql.driver()
  con = drv:connect()
  con:query("SET transaction_mode = '" .. sysbench.opt.tx_mode .. "'")
end

function event()
  local ids = {}
  for i = 1, sysbench.opt.rows_per_tx do
    ids[i] = sysbench.rand.uniform(1, sysbench.opt.table_size)
  end
  table.sort(ids)
  con:query("BEGIN")
  for _, id in ipairs(ids) do
    con:query(string.format("UPDATE sbtest1 SET k = k + 1 WHERE id = %d", id))
  end
  con:query("COMMIT")
end

function thread_done()
  con:disconnect()
end
