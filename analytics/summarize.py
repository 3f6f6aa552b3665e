"""Per-namespace and per-pod summaries of an nri-sysflow archive, on Apache Spark.

Reads the Parquet files the agent exported (`export.formats: [parquet]`, one row per event and
flow, columns as `nri-sysflow convert` documents them) and the alert files
(`alerts-*.jsonl`, sf-processor's JSON) under s3://BUCKET/PREFIX, optionally only those of
files started between --from and --to (UTC days, inclusive), and writes one JSON document:

  talkers    bytes sent and received per pod and remote endpoint (NetworkFlow: the remote end
             is the source of an accepted connection, the destination otherwise)
  files      per pod: distinct files written (FileFlow with a write), bytes written, files
             deleted (FileEvent unlink or rmdir)
  processes  per pod: programs executed (ProcessEvent exec, ret 0) and failed execs (ret != 0)
  alerts     per pod and rule: alerts (one per rule an alert record matched; the pod as
             sf-processor's JSON names it, pod.namespace and pod.name)

Records of host processes have empty namespace and pod. Every list is sorted, so two runs over
the same archive give the same bytes.

S3 is read through Hadoop's s3a:// when the Spark installation has it (hadoop-aws on the
classpath, as on most clusters); otherwise (pip's pyspark ships no hadoop-aws) the objects are
listed with pyarrow's S3 filesystem on the driver and read with pyarrow in Spark tasks, one task
per object. Credentials come from the standard AWS variables either way.

Locally: cargo xtask analytics -- --bucket B --endpoint http://127.0.0.1:8333 --out summary.json
On a cluster: spark-submit --packages org.apache.hadoop:hadoop-aws:3.4.1 analytics/summarize.py ...
"""

import argparse
import datetime
import json
import os
import re
import sys

from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

OP_EXEC = 1 << 1
OP_ACCEPT = 1 << 5
OP_WRITE_SEND = 1 << 9
OP_RMDIR = 1 << 16
OP_UNLINK = 1 << 18

# The columns the summaries need, of the Parquet files' (see plugin/parquet/src/lib.rs).
COLUMNS = [
    "type", "opflags_bitmap", "ret", "pod_ns", "pod_name", "file_path", "net_sip",
    "net_sport", "net_dip", "net_dport", "flow_rbytes", "flow_wbytes",
]
SCHEMA = T.StructType([
    T.StructField("type", T.StringType()),
    T.StructField("opflags_bitmap", T.LongType()),
    T.StructField("ret", T.LongType()),
    T.StructField("pod_ns", T.StringType()),
    T.StructField("pod_name", T.StringType()),
    T.StructField("file_path", T.StringType()),
    T.StructField("net_sip", T.StringType()),
    T.StructField("net_sport", T.LongType()),
    T.StructField("net_dip", T.StringType()),
    T.StructField("net_dport", T.LongType()),
    T.StructField("flow_rbytes", T.LongType()),
    T.StructField("flow_wbytes", T.LongType()),
])
ALERT_SCHEMA = T.StructType([
    T.StructField("pod_ns", T.StringType()),
    T.StructField("pod_name", T.StringType()),
    T.StructField("rule", T.StringType()),
])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", default="", help="key prefix of the archive")
    p.add_argument("--endpoint", default=None, help="S3-compatible store, e.g. http://127.0.0.1:8333")
    p.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    p.add_argument("--from", dest="day_from", default=None, help="first UTC day, YYYY-MM-DD")
    p.add_argument("--to", dest="day_to", default=None, help="last UTC day, YYYY-MM-DD")
    p.add_argument("--out", required=True, help="the summary JSON file to write")
    p.add_argument("--master", default=None, help="Spark master (default: spark-submit's, else local[*])")
    p.add_argument("--no-s3a", action="store_true", help="read through pyarrow even where s3a exists")
    return p.parse_args(argv)


def started_day(key):
    """The UTC day a file was started, from its name (<node>-<secs>-<seq>.<ext>)."""
    m = re.search(r"-(\d{9,})-\d+\.[a-z]+$", key)
    if not m:
        return None
    return datetime.datetime.fromtimestamp(int(m.group(1)), datetime.timezone.utc).date()


def in_range(key, day_from, day_to):
    if day_from is None and day_to is None:
        return True
    day = started_day(key)
    if day is None:
        return False
    return (day_from is None or day >= day_from) and (day_to is None or day <= day_to)


def s3fs(args):
    from pyarrow import fs

    options = {"region": args["region"]}
    if args["endpoint"]:
        scheme, _, host = args["endpoint"].partition("://")
        options.update(endpoint_override=host, scheme=scheme)
    return fs.S3FileSystem(**options)


def list_objects(args):
    from pyarrow import fs

    base = args["bucket"] + ("/" + args["prefix"].strip("/") if args["prefix"].strip("/") else "")
    infos = s3fs(args).get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == fs.FileType.File)


def read_parquet_rows(args):
    def read(path):
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=COLUMNS, filesystem=s3fs(args))
        for record in table.to_pylist():
            yield Row(**record)

    return read


def read_alert_rows(args):
    def read(path):
        with s3fs(args).open_input_stream(path) as f:
            for line in f.read().decode().splitlines():
                if not line.strip():
                    continue
                alert = json.loads(line)
                pod = alert.get("pod", {})
                for policy in alert.get("policies", []):
                    yield Row(pod_ns=pod.get("namespace", ""), pod_name=pod.get("name", ""), rule=policy["id"])

    return read


def has_s3a(spark):
    try:
        spark._jvm.java.lang.Class.forName("org.apache.hadoop.fs.s3a.S3AFileSystem")
        return True
    except Exception:
        return False


def load(spark, args):
    """The events and flows, and the alerts, of the archive as two DataFrames."""
    keys = [k for k in list_objects(args) if in_range(k, args["day_from"], args["day_to"])]
    parquet = [k for k in keys if k.endswith(".parquet")]
    alerts = [k for k in keys if re.search(r"/?alerts-[^/]*\.jsonl$", k)]
    sc = spark.sparkContext
    if has_s3a(spark) and not args["no_s3a"]:
        conf = sc._jsc.hadoopConfiguration()
        if args["endpoint"]:
            conf.set("fs.s3a.endpoint", args["endpoint"])
            conf.set("fs.s3a.path.style.access", "true")
        records = spark.read.parquet(*["s3a://" + k for k in parquet]).select(*COLUMNS) if parquet else spark.createDataFrame([], SCHEMA)
        raw = spark.read.json(["s3a://" + k for k in alerts]) if alerts else None
        if raw is not None and "policies" in raw.columns:
            alert_rows = raw.select(
                F.col("pod.namespace").alias("pod_ns"), F.col("pod.name").alias("pod_name"), F.explode("policies.id").alias("rule")
            ).fillna("")
        else:
            alert_rows = spark.createDataFrame([], ALERT_SCHEMA)
    else:
        records = spark.createDataFrame(
            sc.parallelize(parquet, max(1, len(parquet))).flatMap(read_parquet_rows(args)), SCHEMA
        )
        alert_rows = spark.createDataFrame(
            sc.parallelize(alerts, max(1, len(alerts))).flatMap(read_alert_rows(args)), ALERT_SCHEMA
        )
    return records, alert_rows, len(parquet), len(alerts)


def summarize(records, alert_rows):
    pod = ["namespace", "pod"]
    r = records.withColumnRenamed("pod_ns", "namespace").withColumnRenamed("pod_name", "pod")
    flags = F.coalesce(F.col("opflags_bitmap"), F.lit(0))
    accepted = (flags.bitwiseAND(OP_ACCEPT)) != 0
    talkers = (
        r.where(F.col("type") == "NF")
        .withColumn(
            "remote",
            F.when(accepted, F.concat_ws(":", "net_sip", F.col("net_sport").cast("string")))
            .otherwise(F.concat_ws(":", "net_dip", F.col("net_dport").cast("string"))),
        )
        .groupBy(*pod, "remote")
        .agg(
            F.sum(F.coalesce("flow_wbytes", F.lit(0))).alias("bytes_sent"),
            F.sum(F.coalesce("flow_rbytes", F.lit(0))).alias("bytes_received"),
        )
    )
    written = (
        r.where((F.col("type") == "FF") & ((flags.bitwiseAND(OP_WRITE_SEND)) != 0))
        .groupBy(*pod)
        .agg(
            F.countDistinct("file_path").alias("files_written"),
            F.sum(F.coalesce("flow_wbytes", F.lit(0))).alias("bytes_written"),
        )
    )
    deleted = (
        r.where((F.col("type") == "FE") & ((flags.bitwiseAND(OP_UNLINK | OP_RMDIR)) != 0))
        .groupBy(*pod)
        .agg(F.count(F.lit(1)).alias("files_deleted"))
    )
    files = (
        written.join(deleted, pod, "full_outer")
        .fillna(0, ["files_written", "bytes_written", "files_deleted"])
    )
    processes = (
        r.where((F.col("type") == "PE") & (flags == OP_EXEC))
        .groupBy(*pod)
        .agg(
            F.sum(F.when(F.coalesce("ret", F.lit(0)) == 0, 1).otherwise(0)).alias("executed"),
            F.sum(F.when(F.coalesce("ret", F.lit(0)) != 0, 1).otherwise(0)).alias("exec_failures"),
        )
    )
    alerts = (
        alert_rows.withColumnRenamed("pod_ns", "namespace")
        .withColumnRenamed("pod_name", "pod")
        .groupBy(*pod, "rule")
        .agg(F.count(F.lit(1)).alias("alerts"))
    )

    def rows(df, order):
        return [r.asDict() for r in df.orderBy(*order).collect()]

    return {
        "talkers": rows(talkers, pod + ["remote"]),
        "files": rows(files, pod),
        "processes": rows(processes, pod),
        "alerts": rows(alerts, pod + ["rule"]),
    }


def main(argv):
    args = parse_args(argv)
    parse_day = lambda d: datetime.date.fromisoformat(d) if d else None  # noqa: E731
    settings = {
        "bucket": args.bucket,
        "prefix": args.prefix,
        "endpoint": args.endpoint,
        "region": args.region,
        "day_from": parse_day(args.day_from),
        "day_to": parse_day(args.day_to),
        "no_s3a": args.no_s3a,
    }
    # Local tasks run this interpreter (with pyarrow), not whatever python3 is first on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("nri-sysflow-summaries")
    if args.master:
        builder = builder.master(args.master)
    elif "spark.master" not in builder._options and not os.environ.get("SPARK_ENV_LOADED"):
        builder = builder.master("local[*]")
    spark = (
        builder.config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    try:
        records, alert_rows, parquet_files, alert_files = load(spark, settings)
        summary = summarize(records, alert_rows)
        summary["inputs"] = {
            "parquet_files": parquet_files,
            "alert_files": alert_files,
            "records": records.count(),
        }
    finally:
        spark.stop()
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
        f.write("\n")
    print(
        f"{summary['inputs']['records']} records from {parquet_files} Parquet files, "
        f"{alert_files} alert files: {len(summary['talkers'])} talkers, "
        f"{len(summary['files'])} pods writing or deleting files, "
        f"{len(summary['processes'])} pods executing, {len(summary['alerts'])} alert series -> {args.out}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
