//! The built-in English text the synthetic tokenizer's BPE merges are learned from. Written for
//! Kiln (no outside source); plain prose with some digits, punctuation and contractions so the
//! learned merges look like a real English tokenizer's: ` the`, ` and`, `ing`, `'s`, ...

pub const CORPUS: &str = "\
The river ran slowly past the old mill, and the town that grew along its banks was quiet in \
the early morning. Before the sun rose over the hills, the baker had already lit the oven, and \
the smell of fresh bread drifted through the narrow streets. Children woke to the sound of carts \
on the stones, and their mothers called them to the table for warm milk and honey.

In the spring the fields were green and the farmers worked from dawn until the light was gone. \
They planted wheat and barley in long straight rows, and they watched the sky for rain. When the \
rain came it was gentle, and the young plants drank it and grew tall. By the summer the wheat \
was golden, and the whole valley seemed to shine under the wide blue sky.

The teacher at the small school on the hill taught the children to read and to write, to count \
and to measure, and to ask good questions. She told them that a question is the beginning of \
every answer, and that nobody learns anything without first admitting what they don't know. \
On Fridays she read them stories about sailors and mountains, about kings who lost their crowns \
and shepherds who found their way home in the snow.

There were 12 houses on the main street, 3 shops, 1 church and a library with 2,480 books. The \
librarian kept a careful record of every book that was borrowed and returned. He said that a \
book which is never read is like a lamp which is never lit: it may be beautiful, but it gives no \
light. In the winter evenings people came to the library to sit by the fire and read, and the \
room was full of the quiet sound of turning pages.

Every autumn the town held a fair. Farmers brought their best apples, pumpkins and cheeses, and \
musicians played in the square until late at night. The children ran between the stalls, \
laughing and shouting, and the old people sat on benches and remembered the fairs of their own \
childhood. It wasn't a rich town, and it wasn't a famous one, but the people who lived there \
loved it, and they would not have traded it for any city in the world.

Years later, when the mill had stopped turning and the children had grown up and moved away, \
they still talked about the river, the bread, the long golden fields and the stories on Friday \
afternoons. They told their own children about the town, and they said: remember where you come \
from, be kind to your neighbours, work honestly, and never stop asking questions. It's the \
questions that keep a mind awake, and it's kindness that keeps a town alive.
";
