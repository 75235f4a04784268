"""Coach replies the simulator answers with, in the voice of Larry, the PWS workshop coach.

One category per PWS tool. The texts are written for the simulator: plausible enough for a
demo or a load test, never a stand-in for a real model's quality.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

_PROBLEM_CLARIFICATION: tuple[str, ...] = (
    "Before we talk about any solution, let's slow down. Who exactly experiences this problem, "
    "and when did you last see it happen? Describe the moment, not the fix you have in mind.",
    "You've described an app, but I haven't heard the problem yet. What is someone struggling "
    "with today, and what do they do about it right now? If nobody is doing anything about it, "
    "is it really a problem worth solving?",
    "Let's separate the symptom from the cause. You said customers are unhappy with wait "
    "times, but what makes waiting painful for them? Is it the minutes themselves, or not "
    "knowing how long it will take?",
    "I notice the word 'better' in your problem statement. Better for whom, and measured how? "
    "Try rewriting the statement so that someone outside this room could tell whether it was "
    "solved.",
    "That's an interesting idea, and I'd like to park it for a moment. What evidence do you "
    "have that this problem happens often enough to matter? How many people did you talk to, "
    "and what did they actually say?",
    "Let's make the problem smaller before we make it bigger. Which single group feels this "
    "most sharply, and what does it cost them in time, money or frustration? Start there and "
    "tell me what you learn.",
    "You're already choosing between three solutions, which tells me the problem feels clear "
    "to you. Can you state it in one sentence without naming a product or a technology? If "
    "that's hard, that's where our work is.",
)

_TTA: tuple[str, ...] = (
    "Let's trend this to the absurd. If the cost of storing a photo keeps halving, imagine "
    "it is effectively zero and every moment of your life is recorded. What problem becomes "
    "enormous in that world? Finding the one moment that matters, perhaps.",
    "Take the trend you named, remote work, and push it to its extreme: nobody ever shares a "
    "building with a colleague again. What breaks first? Think about trust, mentoring and "
    "the quiet learning that happens in hallways.",
    "Suppose delivery times keep shrinking until anything arrives in ten minutes. What "
    "absurd situations follow? People might stop owning things at all, and then what job "
    "does a closet do?",
    "Trending to the absurd works best with a trend you can measure. You said 'more people use "
    "AI'; make it concrete. What if every email, essay and report were written by a machine? "
    "What becomes scarce, and who would pay for it?",
    "Let's play the tape forward. If batteries keep getting cheaper at this rate, imagine "
    "energy storage costing almost nothing. Which industries built on scarcity suddenly look "
    "strange, and what new problems appear?",
    "Don't stop at the first step of the trend; go further than feels comfortable. If "
    "subscriptions keep multiplying, picture a household paying for three hundred of them. "
    "What problem does that family have that nobody is solving yet?",
    "The point of the absurd extreme isn't to predict the future. It's to expose problems "
    "that are small today and will grow. Which of the problems you just listed is already "
    "visible in a small way right now?",
)

_JTBD: tuple[str, ...] = (
    "Let's ask the jobs-to-be-done question: what job is your customer hiring this product to "
    "do? Not the features; the progress they're trying to make in their life.",
    "People don't want a quarter-inch drill; they want a quarter-inch hole, and really they "
    "want a shelf on the wall. What's the shelf in your case? What outcome does your customer "
    "care about?",
    "Think about the last time someone switched to your product. What were they firing when "
    "they hired you? The competitor is often not another product but a workaround, a "
    "spreadsheet or doing nothing at all.",
    "A job has functional, emotional and social sides. Someone buying a commuter bike wants to "
    "get to work, but also to feel healthy and be seen as the kind of person who cycles. "
    "Which of those sides did your interviews uncover?",
    "Describe the circumstance in which the job arises. 'Busy parents' is a segment; 'a parent "
    "at 6 pm realising there's nothing for dinner' is a job. Can you restate your customer "
    "that way?",
    "If your product disappeared tomorrow, what would your customers hire instead? Their answer "
    "tells you which job you're really doing and who you're really competing with.",
    "Let's test the job statement. Does it stay true if the technology changes? 'Listen to "
    "music on the go' survived the Walkman, the iPod and streaming; a good job statement "
    "outlives any particular solution.",
)

_S_CURVE: tuple[str, ...] = (
    "Let's place this technology on its S-curve. Is it in the slow, messy early phase, the "
    "steep growth phase, or the flattening top where improvements get expensive? What "
    "evidence tells you where it is?",
    "When performance gains start costing more effort for less improvement, a technology is "
    "nearing maturity. Are you seeing that with this product? Smaller gains each generation "
    "are often the sign.",
    "Mature S-curves are where new curves start. While one technology flattens, a challenger "
    "often looks worse on the old measures but improves faster. Which challenger might be "
    "starting its own curve underneath yours?",
    "Early on an S-curve, progress looks disappointing and many people give up. Electric cars "
    "spent decades there. What would you need to see to believe your technology is about to "
    "enter its steep phase?",
    "Be careful which performance measure you put on the vertical axis. A technology can be "
    "mature on one measure and early on another. Which measure does your customer actually "
    "care about?",
    "Think about where the problems are on each part of the curve. Early on, the problem is "
    "making it work at all; in the steep phase, scaling it; at maturity, cost and "
    "differentiation. Which problems fit where your technology sits today?",
    "Jumping curves is hard because the people invested in the old curve see the new one as a "
    "toy. Who in your industry is dismissing something right now, and why might they be "
    "wrong?",
)

_ACKOFF_DIKW: tuple[str, ...] = (
    "Let's use Ackoff's hierarchy. What you've collected so far is data: raw numbers without "
    "context. What would turn it into information? Who, what, where and when would you need "
    "to add?",
    "Information answers who, what, where and when. Knowledge answers how: how do these facts "
    "connect, and how would you act on them? Which of your findings have you actually "
    "connected to a decision?",
    "Wisdom is knowing why, and choosing what's worth doing. You know how to build the "
    "feature; do you know why your customers would care? That's the question at the top of "
    "the pyramid.",
    "A dashboard full of metrics is mostly data and information. The step to knowledge comes "
    "from understanding the patterns behind them. What pattern in your numbers surprised you, "
    "and what do you think explains it?",
    "Ackoff warned that we often drown in information while starving for understanding. "
    "Before gathering more data, ask what decision it is meant to inform. What would you do "
    "differently depending on the answer?",
    "Let's place your interview notes on the DIKW ladder. The quotes themselves are data. "
    "Grouping them into themes gives information. What knowledge do those themes give you "
    "about the problem, and what would be the wise next step?",
    "More data doesn't automatically climb the hierarchy. A thousand survey answers are still "
    "data until you interpret them. What question are you asking of the data you already "
    "have?",
)

_RED_TEAM: tuple[str, ...] = (
    "Let me play the red team. Your plan assumes customers will change a habit they've had for "
    "years. What evidence do you have that the pain is strong enough to make them switch?",
    "I'm going to challenge the assumption behind your pricing. You expect people to pay every "
    "month for something they use twice a year. Why would they not simply buy it once, or "
    "borrow it?",
    "Suppose a well-funded competitor copies your idea next month. What do you have that they "
    "can't copy quickly? If the answer is 'we were first', let's keep digging.",
    "Your whole argument rests on one interview. What if that person was unusual? Name the "
    "assumption that, if it turned out false, would sink the idea, and tell me how you could "
    "test it this week.",
    "Let's attack the problem statement, not the solution. Is this a problem customers have, "
    "or a problem you have with how customers behave? Those lead to very different places.",
    "Red-teaming isn't about being negative; it's about finding the weak beam before the house "
    "is built. Which assumption in your plan have you never written down because it seemed "
    "too obvious to question?",
    "You assume regulation will stay as it is. What happens to your idea if the rules change "
    "in two years? Which parts survive, and which would you have to rebuild?",
)

_ERROR_RECOVERY: tuple[str, ...] = (
    "That's a very common mix-up, so don't worry. Trending to the absurd isn't about predicting "
    "what will happen; it's about pushing a trend to its extreme to reveal problems. Want to "
    "try it again with the trend you chose?",
    "I think we've slipped from the problem to a solution, which happens to everyone. Let's "
    "step back: what you described is a product. What problem does it solve, and for whom?",
    "Close, but not quite. A job to be done is the progress a customer wants to make, not a "
    "task your product performs. Try phrasing it from the customer's point of view, starting "
    "with 'When I...'.",
    "I may have explained that badly. On the S-curve, the vertical axis is performance and the "
    "horizontal axis is effort or time invested, not market share. Does placing your "
    "technology change with that in mind?",
    "It sounds like data and information got swapped, which is easy to do. Data is the raw "
    "observation; information is data given context. Which one is your spreadsheet of survey "
    "scores?",
    "No problem at all; confusion is part of learning this. Let's go one step at a time. Tell "
    "me in your own words what you think the exercise asks, and I'll tell you where we agree.",
    "You're right to push back, and I was unclear. Red-teaming challenges our own assumptions, "
    "not the people who hold them. Let's pick one assumption in your plan and test it "
    "together.",
)

PWS_REPLIES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "problem_clarification": _PROBLEM_CLARIFICATION,
        "tta": _TTA,
        "jtbd": _JTBD,
        "s_curve": _S_CURVE,
        "ackoff_dikw": _ACKOFF_DIKW,
        "red_team": _RED_TEAM,
        "error_recovery": _ERROR_RECOVERY,
    }
)
