//! Redis commands (`redis-cli FLUSHALL`, Upstash's REST bodies `["FLUSHALL"]`): one table for
//! every place a command is seen. Names are case-insensitive, as Redis reads them; container
//! commands (`CONFIG`, `SCRIPT`, `ACL`, ...) are rated by their subcommand; a Lua script run by
//! `EVAL` is rated by the commands it calls.

/// What a Redis command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Effect {
    /// Reads only.
    Read,
    /// Writes (the default for a command not listed).
    Write,
    /// Deletes keys or data, or changes the server (`DEL`, `CONFIG SET`, `SHUTDOWN`).
    Delete,
    /// Empties a database or the server (`FLUSHALL`, `FLUSHDB`, `SWAPDB`, `FT.DROPINDEX ...
    /// DD`).
    Flush,
}

/// How one command is rated, and whether the name is one Redis has (a name it does not know
/// rates as a write).
pub(crate) fn rate(words: &[&str]) -> (Effect, bool) {
    let Some(first) = words.first() else {
        return (Effect::Write, false);
    };
    let name = first.to_ascii_uppercase();
    let sub = words
        .get(1)
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_default();
    let effect = match name.as_str() {
        "FLUSHALL" | "FLUSHDB" | "SWAPDB" => Effect::Flush,
        "FT.DROPINDEX" | "FT.DROP" if words.iter().any(|w| w.eq_ignore_ascii_case("DD")) => {
            Effect::Flush
        }
        "DEL" | "UNLINK" | "GETDEL" | "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT"
        | "SHUTDOWN" | "DEBUG" | "SLAVEOF" | "REPLICAOF" | "MIGRATE" | "RENAME" | "RENAMENX"
        | "MOVE" | "RESTORE" | "MODULE" | "FT.DROPINDEX" | "FT.DROP" | "FT.DICTDEL"
        | "JSON.DEL" | "JSON.FORGET" | "TS.DEL" | "XGROUP" | "BGREWRITEAOF" | "FAILOVER"
        | "EVALSHA" | "FCALL" => Effect::Delete,
        "CONFIG" => match sub.as_str() {
            "GET" | "HELP" => Effect::Read,
            _ => Effect::Delete,
        },
        "SCRIPT" => match sub.as_str() {
            "EXISTS" | "HELP" => Effect::Read,
            "LOAD" => Effect::Write,
            _ => Effect::Delete,
        },
        "FUNCTION" => match sub.as_str() {
            "LIST" | "DUMP" | "STATS" | "HELP" => Effect::Read,
            "LOAD" => Effect::Write,
            _ => Effect::Delete,
        },
        "CLIENT" => match sub.as_str() {
            "LIST" | "INFO" | "GETNAME" | "ID" | "HELP" | "SETNAME" | "SETINFO"
            | "TRACKINGINFO" => Effect::Read,
            _ => Effect::Delete,
        },
        "ACL" => match sub.as_str() {
            "LIST" | "WHOAMI" | "USERS" | "GETUSER" | "CAT" | "LOG" | "HELP" | "GENPASS"
            | "DRYRUN" => Effect::Read,
            _ => Effect::Delete,
        },
        "CLUSTER" => match sub.as_str() {
            "INFO" | "NODES" | "SLOTS" | "SHARDS" | "MYID" | "KEYSLOT" | "COUNTKEYSINSLOT"
            | "GETKEYSINSLOT" | "LINKS" | "HELP" => Effect::Read,
            _ => Effect::Delete,
        },
        "EVAL" | "EVAL_RO" => script(words.get(1).copied().unwrap_or("")),
        "GET" | "MGET" | "GETRANGE" | "STRLEN" | "KEYS" | "SCAN" | "EXISTS" | "TYPE" | "TTL"
        | "PTTL" | "EXPIRETIME" | "OBJECT" | "RANDOMKEY" | "DUMP" | "HGET" | "HMGET"
        | "HGETALL" | "HKEYS" | "HVALS" | "HLEN" | "HEXISTS" | "HSTRLEN" | "HSCAN"
        | "HRANDFIELD" | "LRANGE" | "LLEN" | "LINDEX" | "LPOS" | "SMEMBERS" | "SCARD"
        | "SISMEMBER" | "SMISMEMBER" | "SRANDMEMBER" | "SSCAN" | "SINTER" | "SUNION" | "SDIFF"
        | "ZRANGE" | "ZRANGEBYSCORE" | "ZREVRANGE" | "ZCARD" | "ZSCORE" | "ZRANK" | "ZREVRANK"
        | "ZCOUNT" | "ZSCAN" | "ZMSCORE" | "XRANGE" | "XREVRANGE" | "XLEN" | "XREAD" | "XINFO"
        | "XPENDING" | "BITCOUNT" | "BITPOS" | "GETBIT" | "PFCOUNT" | "GEOPOS" | "GEODIST"
        | "GEOSEARCH" | "INFO" | "PING" | "ECHO" | "TIME" | "DBSIZE" | "LASTSAVE" | "ROLE"
        | "COMMAND" | "MONITOR" | "SLOWLOG" | "MEMORY" | "LATENCY" | "JSON.GET" | "JSON.MGET"
        | "JSON.TYPE" | "FT.SEARCH" | "FT.AGGREGATE" | "FT.INFO" | "FT._LIST" | "TS.GET"
        | "TS.RANGE" | "TS.MGET" | "FCALL_RO" | "AUTH" | "HELLO" | "SELECT" | "MULTI" | "EXEC"
        | "DISCARD" | "WATCH" | "UNWATCH" | "QUIT" | "--VERSION" => Effect::Read,
        _ => return (Effect::Write, KNOWN_WRITES.contains(&name.as_str())),
    };
    (effect, true)
}

/// Writes Redis has, listed so that a list of words starting with one reads as a command.
const KNOWN_WRITES: &[&str] = &[
    "SET",
    "SETEX",
    "PSETEX",
    "SETNX",
    "MSET",
    "MSETNX",
    "APPEND",
    "INCR",
    "INCRBY",
    "DECR",
    "DECRBY",
    "INCRBYFLOAT",
    "GETSET",
    "GETEX",
    "HSET",
    "HSETNX",
    "HMSET",
    "HDEL",
    "HINCRBY",
    "LPUSH",
    "RPUSH",
    "LPOP",
    "RPOP",
    "LSET",
    "LREM",
    "LTRIM",
    "LINSERT",
    "LMOVE",
    "SADD",
    "SREM",
    "SPOP",
    "SMOVE",
    "ZADD",
    "ZREM",
    "ZINCRBY",
    "ZPOPMIN",
    "ZPOPMAX",
    "ZREMRANGEBYSCORE",
    "ZREMRANGEBYRANK",
    "XADD",
    "XDEL",
    "XTRIM",
    "XACK",
    "PFADD",
    "SETBIT",
    "GEOADD",
    "PERSIST",
    "PUBLISH",
    "COPY",
    "SAVE",
    "BGSAVE",
    "JSON.SET",
    "TS.ADD",
    "FT.CREATE",
];

/// A Lua script: rated by the commands it calls (`redis.call('DEL', KEYS[1])`); a command
/// name that is not a literal could be anything.
fn script(lua: &str) -> Effect {
    let lower = lua.to_ascii_lowercase();
    let mut worst = Effect::Read;
    for call in [
        "redis.call(",
        "redis.pcall(",
        "server.call(",
        "server.pcall(",
    ] {
        for (at, _) in lower.match_indices(call) {
            let args = lua[at + call.len()..].trim_start();
            let quoted = args
                .strip_prefix(['\'', '"'])
                .and_then(|rest| rest.split(['\'', '"']).next());
            let effect = match quoted {
                Some(name) => rate(&[name]).0,
                None => Effect::Delete,
            };
            worst = worst.max(effect);
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_rated_case_insensitively_by_subcommand_and_script() {
        assert_eq!(rate(&["flushall"]), (Effect::Flush, true));
        assert_eq!(rate(&["FlushDb", "ASYNC"]).0, Effect::Flush);
        assert_eq!(rate(&["dEL", "k"]).0, Effect::Delete);
        assert_eq!(rate(&["CONFIG", "GET", "maxmemory"]).0, Effect::Read);
        assert_eq!(rate(&["config", "set", "dir", "/tmp"]).0, Effect::Delete);
        assert_eq!(rate(&["SCRIPT", "FLUSH"]).0, Effect::Delete);
        assert_eq!(rate(&["FT.DROPINDEX", "idx", "DD"]).0, Effect::Flush);
        assert_eq!(rate(&["FT.DROPINDEX", "idx"]).0, Effect::Delete);
        assert_eq!(
            rate(&["EVAL", "return redis.call('FLUSHALL')", "0"]).0,
            Effect::Flush
        );
        assert_eq!(
            rate(&["EVAL", "return redis.call(\"get\", KEYS[1])", "1", "k"]).0,
            Effect::Read
        );
        assert_eq!(
            rate(&["EVAL", "return redis.call(ARGV[1])", "0"]).0,
            Effect::Delete
        );
        assert_eq!(rate(&["SET", "k", "v"]), (Effect::Write, true));
        assert_eq!(rate(&["DropBox"]), (Effect::Write, false));
    }
}
