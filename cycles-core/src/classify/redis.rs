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
        // A script we do not see, a function we do not know: fail closed.
        "FLUSHALL" | "FLUSHDB" | "SWAPDB" | "EVALSHA" | "FCALL" => Effect::Flush,
        // FT.DROPINDEX deletes the documents with DD; FT.DROP unless KEEPDOCS.
        "FT.DROPINDEX" if words.iter().any(|w| w.eq_ignore_ascii_case("DD")) => Effect::Flush,
        "FT.DROP" if !words.iter().any(|w| w.eq_ignore_ascii_case("KEEPDOCS")) => Effect::Flush,
        // A server made a replica discards its whole dataset (`REPLICAOF NO ONE` promotes).
        "SLAVEOF" | "REPLICAOF" if sub != "NO" => Effect::Flush,
        "GETEX"
            if words[1..].iter().any(|w| {
                ["EX", "PX", "EXAT", "PXAT"]
                    .iter()
                    .any(|o| w.eq_ignore_ascii_case(o))
            }) =>
        {
            Effect::Delete
        }
        "DEL" | "UNLINK" | "GETDEL" | "GRAPH.DELETE" | "JSON.CLEAR" | "EXPIRE" | "PEXPIRE"
        | "EXPIREAT" | "PEXPIREAT" | "SHUTDOWN" | "DEBUG" | "SLAVEOF" | "REPLICAOF" | "MIGRATE"
        | "RENAME" | "RENAMENX" | "MOVE" | "RESTORE" | "MODULE" | "FT.DROPINDEX" | "FT.DROP"
        | "FT.DICTDEL" | "JSON.DEL" | "JSON.FORGET" | "TS.DEL" | "BGREWRITEAOF" | "FAILOVER"
        | "XTRIM" | "LTRIM" | "ZREMRANGEBYRANK" | "ZREMRANGEBYSCORE" | "ZREMRANGEBYLEX" => {
            Effect::Delete
        }
        "XGROUP" => match sub.as_str() {
            "DESTROY" | "DELCONSUMER" | "SETID" => Effect::Delete,
            "HELP" => Effect::Read,
            _ => Effect::Write,
        },
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
            "KILL" | "PAUSE" | "NO-EVICT" | "NO-TOUCH" => Effect::Delete,
            "LIST" | "INFO" | "GETNAME" | "ID" | "HELP" | "TRACKINGINFO" | "GETREDIR" => {
                Effect::Read
            }
            _ => Effect::Write,
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

/// A Lua script: rated by the Redis commands its `redis.call`/`pcall` sites name (the first
/// string literal after each, with the literals after it as arguments:
/// `redis.call('FT.DROPINDEX', 'idx', 'DD')`); at least a write. What could compute a command
/// name fails closed: a call whose command is not a plain literal (`redis.call(ARGV[1])`,
/// `local c = redis.call`), concatenation, long strings, numeric escapes, `redis[...]`.
fn script(lua: &str) -> Effect {
    let code = strip_lua_comments(lua);
    if code.contains("..")
        || code.contains("[=")
        || code.contains("redis[")
        || code.contains("server[")
        || code.contains("_G")
        || code.contains("rawget")
        || code.contains("loadstring")
        || code.contains("load(")
    {
        return Effect::Flush;
    }
    let literals = string_literals(&code);
    if literals.iter().any(|(_, raw)| {
        raw.as_bytes()
            .windows(2)
            .any(|w| w[0] == b'\\' && (w[1].is_ascii_digit() || w[1] == b'x' || w[1] == b'u'))
    }) {
        return Effect::Flush;
    }
    let mut worst = Effect::Write;
    let bytes = code.as_bytes();
    for (at, _) in code.match_indices("call") {
        // A call site: `.call`/`:call`/`.pcall` as a whole word.
        let before = code[..at].trim_end_matches('p');
        let whole = !bytes
            .get(at + 4)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        if !(whole && before.ends_with(['.', ':'])) {
            continue;
        }
        let after = code[at + 4..].trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if !after.starts_with(['\'', '"']) {
            return Effect::Flush;
        }
        let start = code.len() - after.len();
        let words: Vec<&str> = literals
            .iter()
            .filter(|(pos, _)| *pos >= start)
            .take(8)
            .map(|(_, value)| value.as_str())
            .collect();
        worst = worst.max(rate(&words).0);
    }
    worst
}

/// Lua text without its comments (`-- ...` to the end of the line, `--[[ ... ]]`), strings
/// kept.
fn strip_lua_comments(lua: &str) -> String {
    let mut out = String::with_capacity(lua.len());
    let mut rest = lua;
    while !rest.is_empty() {
        let next = rest.find(['\'', '"', '-']).unwrap_or(rest.len());
        out.push_str(&rest[..next]);
        rest = &rest[next..];
        if let Some(comment) = rest.strip_prefix("--") {
            rest = match comment.strip_prefix("[[") {
                Some(block) => block.split_once("]]").map_or("", |(_, after)| after),
                None => comment.split_once('\n').map_or("", |(_, after)| after),
            };
            out.push(' ');
        } else if let Some(quote) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') {
            // A string: copied whole, escapes included.
            let mut end = 1;
            let mut escaped = false;
            for (i, c) in rest[1..].char_indices() {
                end = 1 + i + c.len_utf8();
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == quote {
                    break;
                }
            }
            out.push_str(&rest[..end]);
            rest = &rest[end..];
        } else if !rest.is_empty() {
            out.push('-');
            rest = &rest[1..];
        }
    }
    out
}

/// The string literals of comment-free Lua text (`'x'`, `"x"`, `[[x]]`): where each starts,
/// and its raw contents (escapes as written).
fn string_literals(lua: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut chars = lua.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' | '"' => {
                let mut value = String::new();
                let mut escaped = false;
                for (_, d) in chars.by_ref() {
                    if escaped {
                        value.push(d);
                        escaped = false;
                    } else if d == '\\' {
                        value.push(d);
                        escaped = true;
                    } else if d == c {
                        break;
                    } else {
                        value.push(d);
                    }
                }
                out.push((i, value));
            }
            '[' if lua[i + 1..].starts_with('[') => {
                let body = &lua[i + 2..];
                let end = body.find("]]").unwrap_or(body.len());
                out.push((i, body[..end].to_string()));
                let stop = i + 2 + end + 2;
                while chars.peek().is_some_and(|(j, _)| *j < stop) {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    out
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
            Effect::Write
        );
        // Comments, computed names and aliases.
        let script = |lua: &str| rate(&["EVAL", lua, "0"]).0;
        assert_eq!(
            script("-- don't\nreturn redis.call('FLUSHALL') -- won't"),
            Effect::Flush
        );
        assert_eq!(script("return redis.call('FLUSH'..'ALL')"), Effect::Flush);
        assert_eq!(script("return redis.call([==[FLUSHALL]==])"), Effect::Flush);
        assert_eq!(script("return redis.call('FLUSH\\65LL')"), Effect::Flush);
        assert_eq!(
            script("local f = redis['call'] return f(ARGV[1])"),
            Effect::Flush
        );
        assert_eq!(
            script("local calls = redis.call('INCR', KEYS[1]) return calls"),
            Effect::Write
        );
        assert_eq!(
            script("return redis.call('GET', 'debug')"),
            Effect::Read.max(Effect::Write)
        );
        assert_eq!(
            rate(&["EVAL", "return redis.call(ARGV[1])", "0"]).0,
            Effect::Flush
        );
        assert_eq!(
            rate(&["EVAL", "return redis.call ('FLUSHALL')", "0"]).0,
            Effect::Flush
        );
        assert_eq!(
            rate(&["EVAL", "return redis.call'flushdb'", "0"]).0,
            Effect::Flush
        );
        assert_eq!(
            rate(&["EVAL", "local c = redis.call; return c('GET', 'k')", "0"]).0,
            Effect::Flush
        );
        assert_eq!(
            rate(&[
                "EVAL",
                "return redis.call('FT.DROPINDEX', 'idx', 'DD')",
                "0"
            ])
            .0,
            Effect::Flush
        );
        assert_eq!(
            rate(&["REPLICAOF", "evil.example", "6379"]).0,
            Effect::Flush
        );
        assert_eq!(rate(&["REPLICAOF", "NO", "ONE"]).0, Effect::Delete);
        assert_eq!(rate(&["FT.DROP", "idx"]).0, Effect::Flush);
        assert_eq!(rate(&["FT.DROP", "idx", "KEEPDOCS"]).0, Effect::Delete);
        assert_eq!(rate(&["CLIENT", "TRACKING", "on"]).0, Effect::Write);
        assert_eq!(rate(&["SET", "k", "v"]), (Effect::Write, true));
        assert_eq!(rate(&["DropBox"]), (Effect::Write, false));
    }
}
