"""A deterministic hospital for the demo HIS: the same seed, size and start date give the same
departments, doctors, schedules, slot pools, patients, cards, orders and three years of
reports, row for row.

Sizes: ``small`` (tests, about a second), ``medium`` (a demo), ``large`` (benchmarks:
200,000 patients and about 2 million reports; takes a while and is inserted in batches).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from frontdesk.sims.his_sim import models as m

TZ = ZoneInfo("Asia/Shanghai")
BATCH = 5000
COMMIT_ROWS = 200_000


@dataclass(frozen=True)
class Size:
    patients: int
    reports_per_card: int
    paid_orders_per_card: int
    unpaid_orders_per_card: int


SIZES: dict[str, Size] = {
    "small": Size(
        patients=24, reports_per_card=6, paid_orders_per_card=1, unpaid_orders_per_card=2
    ),
    "medium": Size(
        patients=2_000, reports_per_card=10, paid_orders_per_card=2, unpaid_orders_per_card=1
    ),
    "large": Size(
        patients=200_000, reports_per_card=10, paid_orders_per_card=2, unpaid_orders_per_card=1
    ),
}

# (code, name, intro) — a Chinese city hospital's outpatient departments.
DEPARTMENTS: list[tuple[str, str, str]] = [
    ("GIM", "全科医学科", "负责常见病、多发病的首诊与慢病管理，协调转诊。"),
    ("HEP", "肝病科", "诊治病毒性肝炎、脂肪肝、肝硬化等慢性肝病，开展抗病毒长期随访。"),
    ("INF", "感染科", "诊治各类感染性疾病与发热待查，设发热门诊。"),
    ("GAS", "消化内科", "诊治胃炎、消化性溃疡、炎症性肠病，开展胃肠镜检查。"),
    ("CAR", "心血管内科", "诊治高血压、冠心病、心律失常、心力衰竭。"),
    ("RES", "呼吸内科", "诊治慢阻肺、哮喘、肺部感染与肺结节随访。"),
    ("END", "内分泌科", "诊治糖尿病、甲状腺疾病、骨质疏松等代谢性疾病。"),
    ("NEP", "肾内科", "诊治慢性肾病、肾炎，开展血液净化。"),
    ("NEU", "神经内科", "诊治脑血管病、头痛、眩晕、癫痫与帕金森病。"),
    ("GSU", "普通外科", "开展胆囊、疝、甲状腺、乳腺及胃肠外科手术。"),
    ("ORT", "骨科", "诊治骨折、关节与脊柱疾病，开展关节置换与微创手术。"),
    ("URO", "泌尿外科", "诊治泌尿系结石、前列腺疾病与泌尿系肿瘤。"),
    ("GYN", "妇科", "诊治妇科炎症、子宫肌瘤、卵巢囊肿，开展宫腔镜、腹腔镜手术。"),
    ("OBS", "产科", "提供孕期保健、产前检查与分娩服务。"),
    ("PED", "儿科", "诊治儿童常见病、呼吸道感染与生长发育问题。"),
    ("OPH", "眼科", "诊治白内障、青光眼、眼底病与屈光不正。"),
    ("ENT", "耳鼻咽喉科", "诊治鼻炎、鼻窦炎、咽喉疾病与听力障碍。"),
    ("STO", "口腔科", "开展口腔内科、修复、正畸与拔牙。"),
    ("DER", "皮肤科", "诊治湿疹、皮炎、痤疮、银屑病及性传播疾病。"),
    ("TCM", "中医科", "以中医辨证施治调理慢病、亚健康与术后康复。"),
]

SPECIALTIES: dict[str, list[str]] = {
    "GIM": ["慢病管理", "老年综合评估"],
    "HEP": ["慢性乙型肝炎抗病毒治疗", "肝硬化及并发症"],
    "INF": ["发热待查", "艾滋病与结核"],
    "GAS": ["消化内镜", "炎症性肠病"],
    "CAR": ["高血压", "冠心病介入"],
    "RES": ["慢阻肺", "肺结节"],
    "END": ["糖尿病", "甲状腺疾病"],
    "NEP": ["慢性肾病", "血液透析"],
    "NEU": ["脑血管病", "头痛与眩晕"],
    "GSU": ["肝胆外科", "甲状腺乳腺外科"],
    "ORT": ["关节外科", "脊柱外科"],
    "URO": ["泌尿系结石", "前列腺疾病"],
    "GYN": ["妇科微创", "妇科内分泌"],
    "OBS": ["高危妊娠", "产前诊断"],
    "PED": ["小儿呼吸", "儿童保健"],
    "OPH": ["白内障", "眼底病"],
    "ENT": ["鼻科", "耳科"],
    "STO": ["口腔修复", "正畸"],
    "DER": ["银屑病", "过敏性皮肤病"],
    "TCM": ["中医内科", "针灸推拿"],
}

TITLES = [("主任医师", 1), ("副主任医师", 1), ("主治医师", 1), ("住院医师", 1)]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾萧田董潘袁蔡蒋余于杜叶程魏苏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"  # noqa: E501
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉兰萍红鹏飞建国志强海燕文博子涵欣怡浩然宇轩梓萱俊杰思远雨桐晨曦嘉怡"  # noqa: E501
CARD_TYPES = ["self_pay", "city_insurance", "provincial_insurance", "city_cadre"]

# Insurance ratios by card type, in percent of the insurable amount (integer arithmetic).
INSURANCE_PCT = {"self_pay": 0, "city_insurance": 70, "provincial_insurance": 60, "city_cadre": 90}

# (name, unit, unit_price_fen, eligible_pct, kind, executing department)
CATALOGUE: list[tuple[str, str, int, int, str, str]] = [
    ("恩替卡韦分散片 0.5mg×7片", "盒", 2_590, 100, "prescription", "门诊西药房"),
    ("阿莫西林胶囊 0.25g×24粒", "盒", 1_280, 100, "prescription", "门诊西药房"),
    ("二甲双胍缓释片 0.5g×30片", "盒", 1_650, 100, "prescription", "门诊西药房"),
    ("苯磺酸氨氯地平片 5mg×28片", "盒", 3_360, 100, "prescription", "门诊西药房"),
    ("复方甘草片×100片", "瓶", 850, 80, "prescription", "门诊西药房"),
    ("中药饮片（7剂）", "剂", 4_200, 80, "prescription", "中药房"),
    ("血常规（五分类）", "次", 2_000, 100, "lab", "检验科"),
    ("肝功能十一项", "次", 8_500, 100, "lab", "检验科"),
    ("肾功能三项", "次", 3_600, 100, "lab", "检验科"),
    ("血脂四项", "次", 4_400, 100, "lab", "检验科"),
    ("乙肝病毒DNA定量", "次", 18_000, 80, "lab", "检验科"),
    ("空腹血糖", "次", 500, 100, "lab", "检验科"),
    ("胸部CT平扫", "次", 28_000, 80, "exam", "放射科"),
    ("头颅MR平扫", "次", 52_000, 80, "exam", "放射科"),
    ("腹部彩超（肝胆胰脾）", "次", 16_000, 100, "exam", "超声科"),
    ("胸部DR正位片", "次", 7_000, 100, "exam", "放射科"),
    ("特需诊查费", "次", 20_000, 0, "exam", "门诊部"),
]

# Lab panels: (title, specimen, [(code, name, unit, low, high, mean, sd, decimals)])
LAB_PANELS: list[tuple[str, str, list[tuple[str, str, str, float, float, float, float, int]]]] = [
    (
        "血常规",
        "静脉血",
        [
            ("WBC", "白细胞计数", "10^9/L", 3.5, 9.5, 6.2, 1.9, 2),
            ("NEUT%", "中性粒细胞百分比", "%", 40.0, 75.0, 58.0, 9.0, 1),
            ("LYMPH%", "淋巴细胞百分比", "%", 20.0, 50.0, 32.0, 8.0, 1),
            ("RBC", "红细胞计数", "10^12/L", 4.3, 5.8, 4.8, 0.45, 2),
            ("HGB", "血红蛋白", "g/L", 130.0, 175.0, 145.0, 14.0, 0),
            ("PLT", "血小板计数", "10^9/L", 125.0, 350.0, 220.0, 60.0, 0),
        ],
    ),
    (
        "肝功能",
        "血清",
        [
            ("ALT", "丙氨酸氨基转移酶", "U/L", 9.0, 50.0, 35.0, 22.0, 0),
            ("AST", "天门冬氨酸氨基转移酶", "U/L", 15.0, 40.0, 30.0, 14.0, 0),
            ("TBIL", "总胆红素", "μmol/L", 0.0, 21.0, 13.0, 6.0, 1),
            ("ALB", "白蛋白", "g/L", 40.0, 55.0, 45.0, 4.0, 1),
            ("GGT", "γ-谷氨酰转移酶", "U/L", 10.0, 60.0, 38.0, 25.0, 0),
        ],
    ),
    (
        "肾功能",
        "血清",
        [
            ("UREA", "尿素", "mmol/L", 3.1, 8.0, 5.4, 1.5, 2),
            ("CREA", "肌酐", "μmol/L", 57.0, 111.0, 80.0, 20.0, 0),
            ("UA", "尿酸", "μmol/L", 208.0, 428.0, 350.0, 80.0, 0),
        ],
    ),
    (
        "血脂四项",
        "血清",
        [
            ("TC", "总胆固醇", "mmol/L", 0.0, 5.2, 4.8, 0.9, 2),
            ("TG", "甘油三酯", "mmol/L", 0.0, 1.7, 1.5, 0.7, 2),
            ("HDL-C", "高密度脂蛋白胆固醇", "mmol/L", 1.04, 2.0, 1.3, 0.3, 2),
            ("LDL-C", "低密度脂蛋白胆固醇", "mmol/L", 0.0, 3.4, 2.9, 0.7, 2),
        ],
    ),
    (
        "空腹血糖",
        "血浆",
        [
            ("GLU", "葡萄糖", "mmol/L", 3.9, 6.1, 5.6, 1.2, 2),
        ],
    ),
]

# Critical values (危急值) by item code: (below, above).
CRITICAL = {"GLU": (2.8, 22.2), "HGB": (60.0, 999.0), "PLT": (30.0, 1000.0), "WBC": (1.0, 30.0)}

EXAMS: list[tuple[str, str, str, str, list[tuple[str, str]]]] = [
    (
        "CT",
        "胸部",
        "胸部CT平扫",
        "放射科",
        [
            (
                "双肺纹理清晰，肺野内未见明显实质性病变。纵隔内未见肿大淋巴结。心影大小正常。",
                "胸部CT平扫未见明显异常。",
            ),
            (
                "右肺上叶尖段见一磨玻璃结节，大小约6mm×5mm，边界清。余肺野清晰。",
                "右肺上叶磨玻璃结节，建议12个月后复查。",
            ),
        ],
    ),
    (
        "MR",
        "头颅",
        "头颅MR平扫",
        "放射科",
        [
            ("脑实质内未见异常信号，脑室系统不大，中线结构居中。", "头颅MR平扫未见明显异常。"),
            (
                "双侧半卵圆中心见多发点状长T2信号，FLAIR呈高信号。",
                "双侧半卵圆中心多发腔隙性缺血灶。",
            ),
        ],
    ),
    (
        "US",
        "腹部",
        "腹部彩超（肝胆胰脾）",
        "超声科",
        [
            (
                "肝脏形态大小正常，包膜光滑，实质回声均匀。胆囊、胰腺、脾脏未见明显异常。",
                "肝胆胰脾未见明显异常。",
            ),
            ("肝脏大小正常，实质回声增粗增强，分布欠均匀，远场回声衰减。", "脂肪肝（中度）。"),
            (
                "肝脏包膜欠光滑，实质回声增粗，呈结节样改变；门静脉内径13mm。脾厚45mm。",
                "肝硬化声像，脾大。",
            ),
        ],
    ),
    (
        "DR",
        "胸部",
        "胸部DR正位片",
        "放射科",
        [
            ("两肺纹理清晰，未见实变影。心影不大，双膈面光整。", "心肺膈未见明显异常。"),
            ("右下肺野见斑片状模糊影，边界不清。", "右下肺炎症，请结合临床。"),
        ],
    ),
]

DIAGNOSES = [
    "慢性乙型病毒性肝炎",
    "2型糖尿病",
    "高血压病",
    "健康体检",
    "上呼吸道感染",
    "脂肪肝",
    "高脂血症",
    "咳嗽待查",
    "腹痛待查",
]


def _name(rng: random.Random) -> str:
    given = GIVEN[rng.randrange(len(GIVEN))]
    if rng.random() < 0.7:
        given += GIVEN[rng.randrange(len(GIVEN))]
    return SURNAMES[rng.randrange(len(SURNAMES))] + given


def _id_number(rng: random.Random, born: date) -> str:
    body = f"3201{rng.randrange(10, 99)}{born:%Y%m%d}{rng.randrange(100, 999)}"
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]
    return body + check


def _local(day: date, at: time) -> datetime:
    return datetime.combine(day, at, tzinfo=TZ).astimezone(UTC)


def pre_settle_amounts(items: list[tuple[int, int]], card_type: str) -> tuple[int, int, int]:
    """(total, insurance, self-pay) in fen for (amount_fen, eligible_pct) items."""
    pct = INSURANCE_PCT[card_type]
    total = sum(amount for amount, _ in items)
    insurance = sum(amount * eligible * pct // 10_000 for amount, eligible in items)
    return total, insurance, total - insurance


class _Writer:
    """Buffers rows per table, inserts them in batches, and commits every ``COMMIT_ROWS``
    rows so a large seed does not grow one huge transaction (or SQLite WAL file)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.tables: dict[str, Table] = {}
        self.uncommitted = 0

    async def add(self, table: Table, row: dict[str, Any]) -> None:
        self.tables[table.name] = table
        bucket = self.rows.setdefault(table.name, [])
        bucket.append(row)
        if len(bucket) >= BATCH:
            await self.flush(table.name)

    async def flush(self, name: str | None = None) -> None:
        for table_name in [name] if name else list(self.rows):
            bucket = self.rows.get(table_name) or []
            if bucket:
                await self.conn.execute(self.tables[table_name].insert(), bucket)
                self.uncommitted += len(bucket)
                self.rows[table_name] = []
        if self.uncommitted >= COMMIT_ROWS or name is None:
            await self.conn.commit()
            self.uncommitted = 0


# Items that fall rather than rise in the sick patients of this hospital (liver disease).
FALLS_WHEN_SICK = {"ALB", "HGB", "PLT", "HDL-C", "LYMPH%", "RBC"}


def _lab_value(
    rng: random.Random, code: str, low: float, mean: float, sd: float, decimals: int, sick: bool
) -> float:
    factor = 1.0
    if sick and rng.random() < 0.5:
        factor = 0.75 if code in FALLS_WHEN_SICK else 1.6
    value = rng.gauss(mean * factor, sd)
    return round(max(value, 0.0 if low == 0 else low * 0.3), decimals)


def _lab_items(
    rng: random.Random,
    panel: list[tuple[str, str, str, float, float, float, float, int]],
    sick: bool,
) -> list[dict[str, Any]]:
    items = []
    for code, name, unit, low, high, mean, sd, decimals in panel:
        value = _lab_value(rng, code, low, mean, sd, decimals, sick)
        flag = "high" if value > high else "low" if value < low else "normal"
        crit = CRITICAL.get(code)
        critical = bool(crit and (value < crit[0] or value > crit[1]))
        ref = f"<{high:g}" if low == 0 else f"{low:g}-{high:g}"
        items.append(
            {
                "code": code,
                "name": name,
                "result": f"{value:.{decimals}f}",
                "unit": unit,
                "reference_range": ref,
                "abnormal": flag,
                "critical": critical,
            }
        )
    return items


def _hbv_items(rng: random.Random) -> list[dict[str, Any]]:
    if rng.random() < 0.6:
        result, flag = "<20", "normal"
    else:
        mantissa, exponent = rng.randrange(10, 99) / 10, rng.randrange(2, 8)
        result, flag = f"{mantissa:.1f}E+{exponent:02d}", "high"
    return [
        {
            "code": "HBV-DNA",
            "name": "乙型肝炎病毒DNA定量",
            "result": result,
            "unit": "IU/mL",
            "reference_range": "<20",
            "abnormal": flag,
            "critical": False,
        }
    ]


def iter_reports(
    rng: random.Random,
    card_no: str,
    count: int,
    today: date,
    doctors: list[dict[str, Any]],
    first_id: int,
) -> Iterator[dict[str, Any]]:
    """Reviewed lab and exam reports spread over the three years before ``today``."""
    sick = rng.random() < 0.4
    for n in range(count):
        day = today - timedelta(days=rng.randrange(1, 3 * 365))
        sampled_at = _local(day, time(8 + rng.randrange(0, 3), rng.randrange(0, 60)))
        reported_at = sampled_at + timedelta(hours=rng.randrange(2, 30))
        reviewed_at = reported_at + timedelta(minutes=rng.randrange(5, 120))
        requester = doctors[rng.randrange(len(doctors))]
        report_id = f"R{first_id + n:09d}"
        if rng.random() < 0.75:
            pick = rng.randrange(len(LAB_PANELS) + 1)
            if pick == len(LAB_PANELS):
                title, specimen, items = "乙肝病毒DNA定量", "血清", _hbv_items(rng)
            else:
                title, specimen, panel = LAB_PANELS[pick]
                items = _lab_items(rng, panel, sick)
            body: dict[str, Any] = {
                "specimen": specimen,
                "clinical_diagnosis": DIAGNOSES[rng.randrange(len(DIAGNOSES))],
                "tester": _name(rng),
                "reviewer": _name(rng),
                "sampled_at": sampled_at.isoformat(),
                "items": items,
            }
            yield {
                "id": report_id,
                "card_no": card_no,
                "kind": "lab",
                "title": title,
                "department": requester["department_name"],
                "reviewed": True,
                "has_abnormal": any(i["abnormal"] != "normal" for i in items),
                "reported_at": reported_at,
                "reviewed_at": reviewed_at,
                "body": body,
            }
        else:
            modality, part, method, _dept, variants = EXAMS[rng.randrange(len(EXAMS))]
            findings, impression = variants[rng.randrange(len(variants))]
            body = {
                "modality": modality,
                "body_part": part,
                "method": method,
                "findings": findings,
                "impression": impression,
                "reporting_doctor": _name(rng),
                "reviewing_doctor": _name(rng),
                "examined_at": sampled_at.isoformat(),
            }
            yield {
                "id": report_id,
                "card_no": card_no,
                "kind": "exam",
                "title": method,
                "department": requester["department_name"],
                "reviewed": True,
                "has_abnormal": "未见" not in impression,
                "reported_at": reported_at,
                "reviewed_at": reviewed_at,
                "body": body,
            }


async def seed(
    engine: AsyncEngine, *, seed: int = 1, size: str = "small", today: date | None = None
) -> dict[str, int]:
    """Empty the demo HIS database and fill it with a hospital; returns row counts.

    ``today`` is the hospital date the 14 days of schedules start from (default: the
    process clock's hospital date), so tests with a frozen clock get a fixed hospital.
    """
    from frontdesk.core.clock import get_clock

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}")
    spec = SIZES[size]
    today = today or get_clock().local_now().astimezone(TZ).date()
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    async with engine.begin() as conn:
        await conn.run_sync(m.metadata.drop_all)
        await conn.run_sync(m.metadata.create_all)
    async with engine.connect() as conn:
        writer = _Writer(conn)
        for position, (code, name, intro) in enumerate(DEPARTMENTS):
            await writer.add(
                m.department, {"code": code, "name": name, "intro": intro, "position": position}
            )
        doctors: list[dict[str, Any]] = []
        for n in range(80):
            code, dept_name, _ = DEPARTMENTS[n % len(DEPARTMENTS)]
            title = TITLES[(n // len(DEPARTMENTS)) % len(TITLES)][0]
            specialty = SPECIALTIES[code][n % 2]
            name = _name(rng)
            doctor = {
                "code": f"D{n + 1:04d}",
                "department_code": code,
                "name": name,
                "title": title,
                "specialty": specialty,
                "intro": f"{name}，{title}，从事{dept_name}临床工作{rng.randrange(5, 31)}年，"
                f"擅长{specialty}。",
                "photo_url": f"/his-sim/photos/D{n + 1:04d}.svg",
            }
            doctors.append({**doctor, "department_name": dept_name})
            await writer.add(m.doctor, doctor)
        counts["doctors"] = len(doctors)
        schedules = slots = 0
        for doc in doctors:
            for offset in range(14):
                day = today + timedelta(days=offset)
                for period, start in (("am", time(8, 0)), ("pm", time(14, 0))):
                    if day.weekday() == 6 or rng.random() < 0.55:
                        continue
                    if doc["title"] == "主任医师":
                        level = "special_needs" if rng.random() < 0.3 else "expert"
                    elif doc["title"] == "副主任医师":
                        level = "expert"
                    else:
                        level = "ordinary"
                    fee = {"ordinary": 1_000, "expert": 3_000, "special_needs": 20_000}[level]
                    fee += {"ordinary": 500, "expert": 1_000, "special_needs": 10_000}[
                        level
                    ] * rng.randrange(0, 2)
                    quota = rng.randrange(8, 17)
                    schedule_id = f"S{day:%Y%m%d}{doc['code']}{period.upper()}"
                    await writer.add(
                        m.schedule,
                        {
                            "id": schedule_id,
                            "doctor_code": doc["code"],
                            "department_code": doc["department_code"],
                            "on_date": day,
                            "period": period,
                            "level": level,
                            "fee_fen": fee,
                            "status": "open",
                            "pool_version": 1,
                        },
                    )
                    schedules += 1
                    for seq in range(1, quota + 1):
                        starts = _local(day, start) + timedelta(minutes=15 * (seq - 1))
                        await writer.add(
                            m.slot,
                            {
                                "schedule_id": schedule_id,
                                "sequence_no": seq,
                                "starts_at": starts,
                                "ends_at": starts + timedelta(minutes=15),
                                "appointment_id": None,
                            },
                        )
                        slots += 1
        counts["schedules"], counts["slots"] = schedules, slots
        report_seq = order_seq = item_seq = settle_seq = visit_seq = 1
        for pid in range(1, spec.patients + 1):
            born = date(1950, 1, 1) + timedelta(days=rng.randrange(0, 60 * 365))
            await writer.add(
                m.patient,
                {
                    "id": pid,
                    "name": _name(rng),
                    "id_number": _id_number(rng, born),
                    "phone": f"1{rng.choice('3456789')}{rng.randrange(0, 10**9):09d}",
                },
            )
            card_no = f"61{pid:08d}"
            # The first four cards cover the four types; then a realistic mix.
            card_type = (
                CARD_TYPES[pid - 1]
                if pid <= 4
                else rng.choices(CARD_TYPES, weights=[30, 45, 15, 10])[0]
            )
            await writer.add(
                m.card, {"card_no": card_no, "patient_id": pid, "card_type": card_type}
            )
            for row in iter_reports(
                rng, card_no, spec.reports_per_card, today, doctors, report_seq
            ):
                await writer.add(m.report, row)
            report_seq += spec.reports_per_card
            today_visit = ""
            for n in range(spec.paid_orders_per_card + spec.unpaid_orders_per_card):
                paid = n < spec.paid_orders_per_card
                # Visits (就诊): each paid order was its own earlier visit; today's unpaid
                # orders share one visit on even cards and have one visit each on odd cards,
                # so the pages show both shapes. No random draw: the rest stays as it was.
                if paid or pid % 2 == 1 or not today_visit:
                    visit_no = f"V{visit_seq:09d}"
                    visit_seq += 1
                    if not paid:
                        today_visit = visit_no
                else:
                    visit_no = today_visit
                doc = doctors[rng.randrange(len(doctors))]
                created = _local(
                    today - timedelta(days=rng.randrange(1, 60) if paid else 0),
                    time(9, rng.randrange(0, 60)),
                )
                picks = rng.sample(range(len(CATALOGUE)), rng.randrange(1, 4))
                kind = CATALOGUE[picks[0]][4]
                order_id = f"O{order_seq:09d}"
                order_seq += 1
                amounts: list[tuple[int, int]] = []
                item_rows: list[dict[str, Any]] = []
                for pick in picks:
                    name, unit, price, eligible, _kind, _exec = CATALOGUE[pick]
                    qty = rng.randrange(1, 4) if _kind == "prescription" else 1
                    amounts.append((price * qty, eligible))
                    item_rows.append(
                        {
                            "id": f"I{item_seq:09d}",
                            "order_id": order_id,
                            "name": name,
                            "quantity": qty,
                            "unit": unit,
                            "unit_price_fen": price,
                            "eligible_pct": eligible,
                            "status": "paid" if paid else "billed",
                            "insurance_fen": None,
                            "self_pay_fen": None,
                            "refund_id": None,
                        }
                    )
                    item_seq += 1
                settlement_id = None
                if paid:
                    settlement_id = f"T{settle_seq:09d}"
                    settle_seq += 1
                    total, insurance, self_pay = pre_settle_amounts(amounts, card_type)
                    for row, (amount, eligible) in zip(item_rows, amounts, strict=True):
                        ins = amount * eligible * INSURANCE_PCT[card_type] // 10_000
                        row["insurance_fen"], row["self_pay_fen"] = ins, amount - ins
                    await writer.add(
                        m.settlement,
                        {
                            "id": settlement_id,
                            "payment_ref": f"SEED{settlement_id}",
                            "card_no": card_no,
                            "order_ids": [order_id],
                            "total_fen": total,
                            "insurance_fen": insurance,
                            "self_pay_fen": self_pay,
                            "channel": "window",
                            "settled_at": created + timedelta(minutes=20),
                        },
                    )
                await writer.add(
                    m.order,
                    {
                        "id": order_id,
                        "card_no": card_no,
                        "kind": kind,
                        "title": CATALOGUE[picks[0]][0],
                        "ordering_department": doc["department_name"],
                        "executing_department": CATALOGUE[picks[0]][5],
                        "doctor_name": doc["name"],
                        "created_at": created,
                        "status": "paid" if paid else "unpaid",
                        "settlement_id": settlement_id,
                        "execution": "pending",
                        "executed_at": None,
                        "visit_no": visit_no,
                    },
                )
                for row in item_rows:
                    await writer.add(m.order_item, row)
        await writer.flush()
    counts.update(patients=spec.patients, reports=report_seq - 1, orders=order_seq - 1)
    return counts
