"""Small networks for small images: what the offline quickstart trains in minutes on a CPU.

``mini_resnet`` is a CIFAR-style ResNet-10: a 3×3 stem without max-pool, one torchvision
``BasicBlock`` per stage (widths 16-32-64-128), global average pooling and an ``fc`` head. It
keeps torchvision's ResNet key layout (``conv1``, ``bn1``, ``layer1``..``layer4``, ``fc``), so head
replacement and ResNet freeze levels work on it as on the zoo's ResNets.
"""
from __future__ import annotations

from torch import nn


class MiniResNet(nn.Module):
    def __init__(self, num_classes: int = 1000, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        from torchvision.models.resnet import BasicBlock, conv1x1

        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        inplanes = widths[0]
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or inplanes != planes:
                down = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
            block = BasicBlock(inplanes, planes, stride, down)
            setattr(self, f"layer{i + 1}", nn.Sequential(block))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def mini_resnet(*, weights=None, num_classes: int = 1000, **kwargs) -> MiniResNet:
    if weights is not None:
        raise ValueError("mini_resnet has no pretrained weights; train one with "
                         "robust-zoo quickstart")
    return MiniResNet(num_classes=num_classes, **kwargs)
