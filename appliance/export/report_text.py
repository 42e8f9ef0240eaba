"""The printed report's words in English and Simplified Chinese: headings, column names, structure names.

Structure names come from the presets and model packs as identifiers (``lung_left``); :func:`structure_name`
gives the name a reader expects in each language, composing margin shells (``lesion_margin_5mm``) and falling
back to the identifier with spaces when a pack brings a name this table does not know (it is then shown as is
in both languages, never dropped).
"""

from __future__ import annotations

import re

LANGUAGES: tuple[str, ...] = ("en", "zh-CN")

#: Page text per language.
LABELS: dict[str, dict[str, str]] = {
    "en": {
        "title": "3D model report",
        "subtitle": "For surgical planning and 3D printing. Not for diagnosis.",
        "case": "Case",
        "created": "Reconstructed (UTC)",
        "input": "Input",
        "preset": "Model type",
        "device": "Computed on",
        "pictures": "Pictures",
        "structures": "Structures",
        "structure": "Structure",
        "colour": "Colour",
        "volume": "Volume (ml)",
        "triangles": "Triangles",
        "watertight": "Watertight",
        "manifold": "Manifold",
        "distance": "Mean distance to mask (mm)",
        "review": "Review",
        "approved": "approved",
        "rejected": "rejected",
        "not_reviewed": "not reviewed",
        "findings": "Findings",
        "no_findings": "No findings.",
        "severity": "Severity",
        "versions": "Versions",
        "software": "Appliance software",
        "backend": "Segmentation backend",
        "yes": "yes",
        "no": "no",
        "units": "All models in millimetres, DICOM patient coordinates (LPS). No patient data in this report.",
        "review_by": "by {actor}",
    },
    "zh-CN": {
        "title": "三维模型报告",
        "subtitle": "用于手术规划和三维打印，不用于诊断。",
        "case": "病例",
        "created": "重建时间（UTC）",
        "input": "输入图像",
        "preset": "模型类型",
        "device": "计算设备",
        "pictures": "图像",
        "structures": "结构",
        "structure": "结构",
        "colour": "颜色",
        "volume": "体积（毫升）",
        "triangles": "三角形数",
        "watertight": "封闭",
        "manifold": "流形",
        "distance": "与掩膜平均距离（毫米）",
        "review": "审核",
        "approved": "已批准",
        "rejected": "已拒绝",
        "not_reviewed": "未审核",
        "findings": "发现",
        "no_findings": "无发现。",
        "severity": "级别",
        "versions": "版本",
        "software": "设备软件",
        "backend": "分割后端",
        "yes": "是",
        "no": "否",
        "units": "所有模型单位为毫米，DICOM 患者坐标系（LPS）。本报告不含患者信息。",
        "review_by": "审核人：{actor}",
    },
}

#: Structure identifiers of the presets and shipped packs -> (English, Simplified Chinese).
STRUCTURE_NAMES: dict[str, tuple[str, str]] = {
    "body": ("Body outline", "体表轮廓"),
    "bone": ("Bone", "骨骼"),
    "lung_left": ("Left lung", "左肺"),
    "lung_right": ("Right lung", "右肺"),
    "airway": ("Airway", "气道"),
    "vessels_contrast": ("Contrast-filled vessels", "增强血管"),
    "lesion": ("Lesion", "病灶"),
    "liver": ("Liver", "肝脏"),
    "spleen": ("Spleen", "脾脏"),
    "kidney_left": ("Left kidney", "左肾"),
    "kidney_right": ("Right kidney", "右肾"),
    "aorta": ("Aorta", "主动脉"),
    "brain": ("Brain", "脑"),
    "white_matter": ("White matter", "白质"),
    "grey_matter": ("Grey matter", "灰质"),
    "cerebral_white_matter": ("Cerebral white matter", "大脑白质"),
    "cerebral_cortex": ("Cerebral cortex", "大脑皮质"),
    "ventricle": ("Ventricles", "脑室"),
    "lateral_ventricle": ("Lateral ventricle", "侧脑室"),
    "inferior_lateral_ventricle": ("Inferior lateral ventricle", "侧脑室下角"),
    "cerebellum_white_matter": ("Cerebellar white matter", "小脑白质"),
    "cerebellum_cortex": ("Cerebellar cortex", "小脑皮质"),
    "thalamus": ("Thalamus", "丘脑"),
    "caudate": ("Caudate nucleus", "尾状核"),
    "putamen": ("Putamen", "壳核"),
    "pallidum": ("Globus pallidus", "苍白球"),
    "3rd_ventricle": ("Third ventricle", "第三脑室"),
    "4th_ventricle": ("Fourth ventricle", "第四脑室"),
    "brain_stem": ("Brain stem", "脑干"),
    "hippocampus": ("Hippocampus", "海马"),
    "amygdala": ("Amygdala", "杏仁核"),
    "accumbens_area": ("Nucleus accumbens", "伏隔核"),
    "ventraldc": ("Ventral diencephalon", "腹侧间脑"),
}

_MARGIN = re.compile(r"^(?P<base>.+)_margin_(?P<mm>[0-9p]+)mm$")


def structure_name(identifier: str, language: str) -> str:
    """The structure's name in ``language`` (``en`` or ``zh-CN``)."""
    margin = _MARGIN.match(identifier)
    if margin:
        base = structure_name(margin["base"], language)
        mm = margin["mm"].replace("p", ".")
        return f"{base} 安全边界 {mm} 毫米" if language == "zh-CN" else f"{base} safety margin {mm} mm"
    known = STRUCTURE_NAMES.get(identifier)
    if known is None:
        return identifier.replace("_", " ")
    return known[1] if language == "zh-CN" else known[0]
