"""Sentences for the synthetic child-speech demo corpus, written for speechpeft.

Everyday topics a young child talks about (school, family, food, animals, play, weather), in
simplified characters, with numbers written as characters. Whole sentences are hand-written;
the rest are composed from hand-written parts that fit together. `sentence_bank(seed)` returns
a deterministic, de-duplicated list.
"""

from __future__ import annotations

import random

WHOLE = [
    "你想和我一起玩积木吗？",
    "下雨了，我们快回家吧。",
    "我的牙齿掉了一颗。",
    "今天是我的生日。",
    "妈妈给我买了一双新鞋。",
    "小兔子最喜欢吃胡萝卜。",
    "我会自己穿衣服了。",
    "老师说我画得很好。",
    "外面的风好大呀。",
    "我想养一只小乌龟。",
    "天黑了，月亮出来了。",
    "我们一起去看星星吧。",
    "这个西瓜又大又甜。",
    "我不想去打针。",
    "爸爸的车是红色的。",
    "我长大了想当医生。",
    "小鸟在树上唱歌。",
    "我把玩具收拾好了。",
    "今天中午吃米饭和鸡蛋。",
    "请你把门关上。",
    "我的气球飞走了。",
    "冬天到了，下雪了。",
    "我们班有一个新同学。",
    "小鱼在水里游来游去。",
    "我最喜欢的颜色是绿色。",
    "奶奶讲的故事真有趣。",
    "我的手弄脏了，要去洗手。",
    "哥哥教我骑自行车。",
    "这道题我会做。",
    "春天来了，花都开了。",
    "我们排好队去吃午饭。",
    "小猫在沙发上睡觉。",
    "我今天得了一朵小红花。",
    "妹妹哭了，我去哄她。",
    "明天我们要去春游。",
    "我喜欢听妈妈唱歌。",
    "树叶变黄了，秋天来了。",
    "我的铅笔断了。",
    "太阳出来了，天气真好。",
    "我们在草地上捉蝴蝶。",
    "爷爷每天早上去散步。",
    "这个蛋糕是草莓味的。",
    "我帮老师擦黑板。",
    "下课了，我们去玩滑梯。",
    "晚上我要早点睡觉。",
    "小狗摇着尾巴跑过来。",
    "我把牛奶都喝完了。",
    "我们一起来唱生日歌。",
    "我的书包里有三本书。",
    "外面好冷，要穿厚衣服。",
    "爸爸带我去看大海。",
    "我害怕打雷。",
    "我学会了写自己的名字。",
    "大象的鼻子很长。",
    "我给妈妈画了一张画。",
    "我们家有一只白猫。",
    "今天我是值日生。",
    "下午我们有音乐课。",
    "这朵花闻起来真香。",
    "我想再吃一块饼干。",
]

PEOPLE = [
    "我",
    "我们",
    "妈妈",
    "爸爸",
    "奶奶",
    "爷爷",
    "哥哥",
    "姐姐",
    "弟弟",
    "妹妹",
    "小明",
    "小红",
    "我的好朋友",
    "我和同桌",
]
TIMES = [
    "今天",
    "明天",
    "昨天",
    "早上",
    "中午",
    "晚上",
    "星期六",
    "星期天",
    "放学以后",
    "下课的时候",
    "周末",
    "吃完饭以后",
]
ACTIVITIES = [
    "去公园放风筝",
    "在家里画画",
    "去超市买水果",
    "在操场上跑步",
    "给小花浇水",
    "看一本新的故事书",
    "和小狗一起玩",
    "去奶奶家吃饺子",
    "在房间里搭积木",
    "去游泳池游泳",
    "学一首新歌",
    "帮妈妈洗碗",
    "去动物园看熊猫",
    "在院子里踢足球",
    "坐公共汽车去学校",
    "写作业",
    "吃一个大苹果",
    "喝一杯热牛奶",
    "去图书馆借书",
    "在河边钓鱼",
    "骑自行车去上学",
    "整理自己的书包",
    "给爷爷打电话",
    "在沙发上睡午觉",
    "做一个漂亮的风车",
    "去海边捡贝壳",
    "跳绳",
    "和同学一起做游戏",
    "在厨房里包包子",
    "画一只大老虎",
    "去商店买文具",
    "在阳台上看小鸟",
    "把房间打扫干净",
]
THINGS = {
    "我的新书包": ["是蓝色的", "里面装满了书", "特别好看", "有一只小熊"],
    "今天的天气": ["非常好", "有点儿冷", "特别热", "一直在下雨"],
    "学校的操场": ["又大又干净", "上有很多小朋友", "旁边有一棵大树"],
    "妈妈做的饭": ["真好吃", "有鱼还有青菜", "香极了"],
    "这只小兔子": ["很可爱", "的耳朵长长的", "在吃青草", "跑得很快"],
    "公园里的花": ["开得很漂亮", "有红的也有黄的", "引来了很多蜜蜂"],
    "动物园的长颈鹿": ["的脖子很长", "在吃树叶", "比房子还高"],
    "我的铅笔盒": ["里有五支铅笔", "是妈妈送给我的", "找不到了"],
    "冬天的雪": ["又白又软", "下得很大", "堆成了一个雪人"],
    "我们的老师": ["很温柔", "会弹钢琴", "今天穿了一条裙子"],
    "小明的风筝": ["飞得很高", "是一只蝴蝶", "挂在树上了"],
    "桌子上的苹果": ["又红又大", "被弟弟吃掉了", "闻起来很香"],
}
CALLS = ["妈妈", "爸爸", "老师", "奶奶", "哥哥", "姐姐", "小红"]
QUESTIONS = [
    "你看见我的铅笔了吗",
    "我们今天去哪儿玩",
    "我可以吃一块糖吗",
    "明天要上学吗",
    "你能陪我看书吗",
    "小狗饿了吗",
    "晚饭吃什么呀",
    "我能出去玩一会儿吗",
    "为什么天是蓝色的",
    "你喜欢什么动物",
    "我的袜子在哪里",
    "什么时候去动物园",
]


def sentence_bank(seed: int = 0, activities: int = 300, questions: int = 60) -> list[str]:
    """Every hand-written sentence and description, plus sampled questions and activity
    sentences, shuffled deterministically; no duplicates."""
    rng = random.Random(seed)
    acts = sorted({f"{p}{t}{a}。" for p in PEOPLE for t in TIMES for a in ACTIVITIES})
    descs = sorted({f"{thing}{d}。" for thing, ds in THINGS.items() for d in ds})
    asks = sorted({f"{c}，{q}？" for c in CALLS for q in QUESTIONS})
    chosen = list(WHOLE) + descs + rng.sample(asks, questions) + rng.sample(acts, activities)
    out = list(dict.fromkeys(chosen))  # de-duplicate, keep order
    rng.shuffle(out)
    return out
