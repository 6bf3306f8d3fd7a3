"""Viewtron push bodies for the end-to-end test, written from the protocol notes.

Three layouts are covered: an IPC licence-plate post (``VEHICE``, config 1.7,
``listInfo`` items with ``image`` 0 = overview and 1 = plate crop), an NVR face
post (config 2.0.0, ``messageType`` alarmData, ``videoFaceDetect`` with
``faceListInfo`` and ``deviceInfo/channelId``) and an IPC perimeter-intrusion
post (``PEA`` with a ``perimeter`` block). The images are small JPEGs made with
Pillow at run time, so the test knows their exact bytes.
"""

from __future__ import annotations

import base64
import http.client
import io
import time
from dataclasses import dataclass
from string import Template

from PIL import Image, ImageDraw

SUCCESS_REPLY = (
    b'<?xml version="1.0" encoding="UTF-8"?><config version="1.0" '
    b'xmlns="http://www.ipc.com/ver10"><status>success</status></config>'
)
assert len(SUCCESS_REPLY) == 126


def make_jpeg(width: int, height: int, seed: int, label: str) -> bytes:
    """A small real JPEG whose pixels depend on ``seed`` (so every picture differs)."""
    base = ((seed * 67) % 200 + 30, (seed * 131) % 200 + 30, (seed * 29) % 200 + 30)
    img = Image.new("RGB", (width, height), base)
    draw = ImageDraw.Draw(img)
    step = max(4, width // 12)
    for i, x in enumerate(range(0, width, step)):
        shade = (base[0] + 40 * (i % 3)) % 256, (base[1] + 25 * i) % 256, base[2]
        draw.rectangle([x, height // 2, x + step - 1, height - 1], fill=shade)
    draw.rectangle([2, 2, width - 3, height // 2 - 2], outline=(255, 255, 255))
    draw.text((6, 6), label, fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def now_us() -> int:
    return int(time.time() * 1_000_000)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class Device:
    """Identity of a simulated box."""

    mac: str
    name: str
    serial: str = ""
    channel: int | None = None

    @property
    def hw_key(self) -> str:
        """MAC without separators, lower case (the bridge's object-id key)."""
        key = self.mac.lower().replace(":", "").replace("-", "")
        return f"{key}_ch{self.channel}" if self.channel is not None else key

    @property
    def device_id(self) -> str:
        """The bridge's topic device id: slug of the MAC, plus ``_ch<N>``."""
        slug = "".join(c if c.isalnum() else "_" for c in self.mac.lower())
        return f"{slug}_ch{self.channel}" if self.channel is not None else slug


# --------------------------------------------------------------------------- IPC LPR

_LPR = Template("""<?xml version="1.0" encoding="UTF-8"?>
<config version="1.7" xmlns="http://www.ipc.com/ver10">
<types>
<openAlramObj>
<enum>MOTION</enum>
<enum>PEA</enum>
<enum>VEHICE</enum>
<enum>VFD</enum>
</openAlramObj>
</types>
<smartType type="openAlramObj">VEHICE</smartType>
<subscribeOption type="subscribeRelation[V1]">FEATURE_RESULT</subscribeOption>
<currentTime type="tint64">$time_us</currentTime>
<mac type="string"><![CDATA[$mac]]></mac>
<sn type="string"><![CDATA[$serial]]></sn>
<deviceName type="string"><![CDATA[$name]]></deviceName>
<channelId type="uint32">1</channelId>
<plateCount type="uint32">1</plateCount>
<listInfo type="list" count="2">
<item>
<image type="uint32">0</image>
<vehiceId type="uint32">0</vehiceId>
<plateNumber type="string"><![CDATA[]]></plateNumber>
<targetImageData>
<dataType type="uint32">0</dataType>
<targetType type="targetType"></targetType>
<Width type="uint32">$ov_w</Width>
<Height type="uint32">$ov_h</Height>
<targetBase64Length type="uint32">$ov_len</targetBase64Length>
<targetBase64Data type="string"><![CDATA[$ov_b64]]></targetBase64Data>
</targetImageData>
</item>
<item>
<image type="uint32">1</image>
<vehiceId type="uint32">$vehicle_id</vehiceId>
<plateNumber type="string"><![CDATA[$plate]]></plateNumber>
<plateCharCount type="uint32">$plate_len</plateCharCount>
$direction_line
$list_line
<PlateWidth type="uint32">$crop_w</PlateWidth>
<PlateHeight type="uint32">$crop_h</PlateHeight>
<SourceImageWidth type="uint32">$ov_w</SourceImageWidth>
<SourceImageHeight type="uint32">$ov_h</SourceImageHeight>
<leftTop><x type="uint32">4020</x><y type="uint32">6110</y></leftTop>
<rightTop><x type="uint32">5480</x><y type="uint32">6110</y></rightTop>
<leftBottom><x type="uint32">4020</x><y type="uint32">6790</y></leftBottom>
<rightBottom><x type="uint32">5480</x><y type="uint32">6790</y></rightBottom>
<PlateConfidence type="uint32" count="$confidence"/>
<plateColor type="uint32" count="2"/>
<province type="string"></province>
<carAttr>
<color type="string">blue</color>
<type type="string">saloon car</type>
<brand type="string">E2EBrand</brand>
<model type="string">E2EBrand_Model1</model>
</carAttr>
<targetImageData>
<dataType type="uint32">0</dataType>
<targetType type="targetType">car</targetType>
<Width type="uint32">$crop_w</Width>
<Height type="uint32">$crop_h</Height>
<targetBase64Length type="uint32">$crop_len</targetBase64Length>
<targetBase64Data type="string"><![CDATA[$crop_b64]]></targetBase64Data>
</targetImageData>
</item>
</listInfo>
</config>
""")


def lpr_post(dev: Device, plate: str, overview: bytes, crop: bytes, list_type: str | None,
             vehicle_id: int, size: tuple[int, int], crop_size: tuple[int, int],
             direction: str | None = "approach", confidence: float = 96.5) -> bytes:
    """``direction`` None leaves ``vehicleDirect`` out; ``confidence`` is a percentage
    (sent as ``PlateConfidence@count`` = confidence x 100)."""
    ov_b64, crop_b64 = _b64(overview), _b64(crop)
    list_line = (f'<vehicleListType type="vehileMatchAlarmList">{list_type}</vehicleListType>'
                 if list_type else "")
    direction_line = (f'<vehicleDirect type="vehicleDirectType">{direction}</vehicleDirect>'
                      if direction else "")
    return _LPR.substitute(
        time_us=now_us(), mac=dev.mac, serial=dev.serial, name=dev.name,
        ov_w=size[0], ov_h=size[1], ov_len=len(ov_b64), ov_b64=ov_b64,
        vehicle_id=vehicle_id, plate=plate, plate_len=len(plate), list_line=list_line,
        direction_line=direction_line, confidence=round(confidence * 100),
        crop_w=crop_size[0], crop_h=crop_size[1], crop_len=len(crop_b64), crop_b64=crop_b64,
    ).encode("utf-8")


# --------------------------------------------------------------------------- IPC building blocks

def _ipc_document(smart_type: str, dev: Device, body: str) -> bytes:
    """An IPC (config 1.7) smart-data post: envelope, identity, then ``body``."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<config version="1.7" xmlns="http://www.ipc.com/ver10">
<smartType type="openAlramObj">{smart_type}</smartType>
<subscribeOption type="subscribeRelation[V1]">FEATURE_RESULT</subscribeOption>
<currentTime type="tint64">{now_us()}</currentTime>
<relativeTime type="tint64">98765432</relativeTime>
<mac type="string"><![CDATA[{dev.mac}]]></mac>
<sn type="string"><![CDATA[{dev.serial}]]></sn>
<deviceName type="string"><![CDATA[{dev.name}]]></deviceName>
{body}
</config>
""".encode("utf-8")


def _rect(x1: int, y1: int, x2: int, y2: int) -> str:
    return (f'<rect><x1 type="uint32">{x1}</x1><y1 type="uint32">{y1}</y1>'
            f'<x2 type="uint32">{x2}</x2><y2 type="uint32">{y2}</y2></rect>')


def _ipc_target_list(target_id: int, rect: str, target_type: int, crop: bytes,
                     crop_size: tuple[int, int]) -> str:
    """``listInfo`` with one target and its crop (object class 1 person, 2 car, 4 bike)."""
    b64 = _b64(crop)
    return f"""<listInfo type="list" count="1">
<item>
<targetId type="tuint32">{target_id}</targetId>
{rect}
<targetImageData>
<dataType type="uint32">0</dataType>
<targetType type="uint32">{target_type}</targetType>
<Width type="uint32">{crop_size[0]}</Width>
<Height type="uint32">{crop_size[1]}</Height>
<targetBase64Length type="uint32">{len(b64)}</targetBase64Length>
<targetBase64Data type="string"><![CDATA[{b64}]]></targetBase64Data>
</targetImageData>
</item>
</listInfo>"""


def _ipc_source(overview: bytes, size: tuple[int, int]) -> str:
    b64 = _b64(overview)
    return f"""<sourceDataInfo>
<dataType type="uint32">0</dataType>
<width type="uint32">{size[0]}</width>
<height type="uint32">{size[1]}</height>
<sourceBase64Length type="uint32">{len(b64)}</sourceBase64Length>
<sourceBase64Data type="string"><![CDATA[{b64}]]></sourceBase64Data>
</sourceDataInfo>"""


# --------------------------------------------------------------------------- IPC PEA (intrusion)

def intrusion_post(dev: Device, overview: bytes, crop: bytes, target_id: int,
                   size: tuple[int, int], crop_size: tuple[int, int],
                   target_type: int = 1) -> bytes:
    """``target_type`` is the object class: 1 person, 2 car, 4 bike."""
    rect = _rect(3000, 3500, 4200, 8000)
    points = "\n".join(f'<item><point><x type="uint32">{x}</x><y type="uint32">{y}</y></point></item>'
                       for x, y in ((1500, 2000), (8500, 2000), (8500, 9000), (1500, 9000)))
    perimeter = f"""<perimeter>
<perInfo type="list" count="1">
<item>
<eventId type="uint32">3</eventId>
<targetId type="tuint32">{target_id}</targetId>
<status type="perStatus">SMART_START</status>
<boundary type="list" count="4">
{points}
</boundary>
{rect}
</item>
</perInfo>
</perimeter>"""
    return _ipc_document("PEA", dev, "\n".join([
        perimeter,
        _ipc_target_list(target_id, rect, target_type, crop, crop_size),
        _ipc_source(overview, size),
    ]))


# --------------------------------------------------------------------------- IPC PASSLINECOUNT

def passline_post(dev: Device, counts: dict[str, int], overview: bytes, crop: bytes,
                  target_id: int, size: tuple[int, int], crop_size: tuple[int, int]) -> bytes:
    """A line-counting post; ``counts`` keys are ``enter_person``, ``leave_car``, ...
    (running totals as the camera keeps them; missing keys are 0)."""
    counters = "\n".join(
        f'<{d}{c.capitalize()}Count type="uint32">{int(counts.get(f"{d}_{c}", 0)) if d != "exist" else 0}'
        f'</{d}{c.capitalize()}Count>'
        for d in ("enter", "leave", "exist") for c in ("car", "person", "bike"))
    rect = _rect(4000, 3000, 5000, 7000)
    passline = f"""<passLineCount>
{counters}
<aoiInfo type="list" count="1">
<item>
<eventId type="uint32">1</eventId>
<targetId type="tuint32">{target_id}</targetId>
<status type="perStatus">SMART_START</status>
<line><x1 type="uint32">1000</x1><y1 type="uint32">5000</y1><x2 type="uint32">9000</x2><y2 type="uint32">5000</y2><Direct type="uint32">1</Direct></line>
{rect}
</item>
</aoiInfo>
</passLineCount>"""
    return _ipc_document("PASSLINECOUNT", dev, "\n".join([
        passline,
        _ipc_target_list(target_id, rect, 1, crop, crop_size),
        _ipc_source(overview, size),
    ]))


# --------------------------------------------------------------------------- NVR face

_NVR_FACE = Template("""<?xml version="1.0" encoding="UTF-8"?>
<config version="2.0.0" xmlns="http://www.ipc.com/ver10">
<messageType>alarmData</messageType>
<deviceInfo>
<deviceName><![CDATA[$name]]></deviceName>
<ip><![CDATA[127.0.0.1]]></ip>
<mac><![CDATA[$mac]]></mac>
<channelId>$channel</channelId>
</deviceInfo>
<smartType>videoFaceDetect</smartType>
<currentTime>$time_us</currentTime>
<faceListInfo>
<item>
<targetId>$target_id</targetId>
<rect><x1>120</x1><y1>40</y1><x2>200</x2><y2>120</y2></rect>
<age>middleAged</age>
<sex>female</sex>
<glasses>no</glasses>
<mask>no</mask>
<targetImageData>
<dataType>0</dataType>
<width>$crop_w</width>
<height>$crop_h</height>
<targetBase64Length>$crop_len</targetBase64Length>
<targetBase64Data><![CDATA[$crop_b64]]></targetBase64Data>
</targetImageData>
</item>
</faceListInfo>
<sourceDataInfo>
<dataType>0</dataType>
<width>$ov_w</width>
<height>$ov_h</height>
<sourceBase64Length>$ov_len</sourceBase64Length>
<sourceBase64Data><![CDATA[$ov_b64]]></sourceBase64Data>
</sourceDataInfo>
</config>
""")


def nvr_face_post(nvr: Device, channel: int, overview: bytes, crop: bytes, target_id: int,
                  size: tuple[int, int], crop_size: tuple[int, int]) -> bytes:
    ov_b64, crop_b64 = _b64(overview), _b64(crop)
    return _NVR_FACE.substitute(
        time_us=now_us(), mac=nvr.mac, name=nvr.name, channel=channel, target_id=target_id,
        ov_w=size[0], ov_h=size[1], ov_len=len(ov_b64), ov_b64=ov_b64,
        crop_w=crop_size[0], crop_h=crop_size[1], crop_len=len(crop_b64), crop_b64=crop_b64,
    ).encode("utf-8")


# --------------------------------------------------------------------------- HTTP side


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    socket_id: int  # id() of the client socket that carried the exchange


class CameraLink:
    """One HTTP connection to the bridge, used like a camera or an NVR would.

    ``nvr=True`` sends the request target in absolute form and ``Connection:
    close``, as NVRs in their default non-persistent mode do; otherwise it is an
    IPC-style persistent connection that carries several posts.
    """

    def __init__(self, host: str, port: int, nvr: bool = False, timeout: float = 10.0) -> None:
        self.host, self.port, self.nvr = host, port, nvr
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def post(self, body: bytes, path: str = "/API") -> Reply:
        if self.nvr:
            target = f"http://{self.host}:{self.port}{path}"
            headers = {"Content-Type": "application/soap+xml; charset=utf-8", "Connection": "close"}
        else:
            target = path
            headers = {"Content-Type": "application/xml; charset=utf-8", "Connection": "keep-alive"}
        self.conn.request("POST", target, body=body, headers=headers)
        sock_id = id(self.conn.sock)
        resp = self.conn.getresponse()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, sock_id)

    def still_open(self) -> bool:
        """True while http.client keeps the socket for the next request."""
        return self.conn.sock is not None

    def close(self) -> None:
        self.conn.close()
